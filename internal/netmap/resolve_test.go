package netmap

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/microlink-go/microlink/internal/tailcfg"
)

func TestResolve(t *testing.T) {
	m := New(Options{})
	laptop := testNode(1)
	laptop.Name = "laptop.example.ts.net."
	laptop.Hostinfo.Hostname = "Johns-MacBook"
	shared := testNode(2) // shared in from another tailnet, same short name
	shared.Name = "laptop.other.ts.net."
	upper := testNode(3)
	upper.Name = "Server.Example.ts.net."
	onlyHost := testNode(4)
	onlyHost.Name = ""
	onlyHost.Hostinfo.Hostname = "printer"
	foreign := testNode(5)
	foreign.Name = "nas.other.ts.net."
	mustApply(t, m, &tailcfg.MapResponse{Node: selfNode(), Peers: []*tailcfg.Node{laptop, shared, upper, onlyHost, foreign}})

	tests := []struct {
		name string
		want tailcfg.NodeID // 0: not found; 1000: self
	}{
		{"laptop", 1},
		{"LAPTOP", 1},
		{"laptop.example.ts.net", 1},
		{"laptop.example.ts.net.", 1},
		{"Laptop.Example.TS.net.", 1},
		{"laptop.other.ts.net", 2},
		{"server", 3},
		{"server.example.ts.net", 3},
		{"SERVER.EXAMPLE.TS.NET.", 3},
		{"printer", 4},
		{"nas", 5},
		{"johns-macbook", 1},
		{"me", 1000},
		{"me.example.ts.net.", 1000},
		{"missing", 0},
		{"laptop.example", 0},
		{"", 0},
		{".", 0},
	}
	for _, tc := range tests {
		got, ok := m.Resolve(tc.name)
		if tc.want == 0 {
			if ok {
				t.Errorf("Resolve(%q) = %v, want not found", tc.name, got)
			}
			continue
		}
		want := []netip.Addr{v4(tc.want), v6(tc.want)}
		if !ok || !slices.Equal(got, want) {
			t.Errorf("Resolve(%q) = %v %v, want %v", tc.name, got, ok, want)
		}
	}
}

func TestResolveFollowsRename(t *testing.T) {
	m := newTestMap(t, 1)
	n := testNode(1)
	n.Name = "renamed.example.ts.net."
	n.Hostinfo.Hostname = "renamed"
	mustApply(t, m, &tailcfg.MapResponse{PeersChanged: []*tailcfg.Node{n}})
	if _, ok := m.Resolve("host1"); ok {
		t.Error("old name still resolves")
	}
	if _, ok := m.Resolve("renamed"); !ok {
		t.Error("new name does not resolve")
	}
	mustApply(t, m, &tailcfg.MapResponse{PeersRemoved: []tailcfg.NodeID{1}})
	if _, ok := m.Resolve("renamed.example.ts.net"); ok {
		t.Error("removed peer resolves")
	}
}
