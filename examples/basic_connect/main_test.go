package main

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/microlink-go/microlink"
)

func TestPeerChanges(t *testing.T) {
	a := netip.MustParseAddr("100.64.0.1")
	b := netip.MustParseAddr("100.64.0.2")
	before := []microlink.Peer{
		{Name: "gone", NodeKey: "k1", Addresses: []netip.Addr{a}},
		{Name: "same", NodeKey: "k2", Addresses: []netip.Addr{b}},
		{Name: "wakes", NodeKey: "k3"},
		{Name: "moves", NodeKey: "k4", Addresses: []netip.Addr{a}},
	}
	after := []microlink.Peer{
		{Name: "moves", NodeKey: "k4", Addresses: []netip.Addr{b}},
		{Name: "new", NodeKey: "k5", Addresses: []netip.Addr{a, b}, Online: true},
		{Name: "same", NodeKey: "k2", Addresses: []netip.Addr{b}},
		{Name: "wakes", NodeKey: "k3", Online: true},
	}
	got := peerChanges(before, after)
	want := []string{
		"peer moves has new addresses: 100.64.0.2",
		"peer joined: new 100.64.0.1,100.64.0.2 (online: yes)",
		"peer wakes is now online",
		"peer left: gone",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("peerChanges =\n%q\nwant\n%q", got, want)
	}
	if got := peerChanges(after, after); len(got) != 0 {
		t.Fatalf("no change gave %q", got)
	}
}

func TestPath(t *testing.T) {
	for _, tc := range []struct {
		p    microlink.Peer
		want string
	}{
		{microlink.Peer{}, "-"},
		{microlink.Peer{Path: "derp", DERPRegion: 900}, "DERP(900)"},
		{microlink.Peer{Path: "direct", Endpoint: netip.MustParseAddrPort("192.0.2.1:41641")}, "direct 192.0.2.1:41641"},
	} {
		if got := path(tc.p); got != tc.want {
			t.Errorf("path(%+v) = %q, want %q", tc.p, got, tc.want)
		}
	}
}
