package microlink

import (
	"net/netip"
	"testing"

	"github.com/microlink-go/microlink/internal/tailcfg"
)

// TestIgnoreInterface: the network monitor leaves out interfaces that
// carry the node's own tailnet address or any Tailscale address, and
// tailscaled's TUN device; it keeps the uplinks.
func TestIgnoreInterface(t *testing.T) {
	n, _ := offlineNode(t)
	self := netip.MustParsePrefix("100.64.0.7/32")
	uplink := []netip.Prefix{netip.MustParsePrefix("198.18.5.2/24")}
	if n.ignoreInterface("mltun0", []netip.Prefix{self}) {
		t.Fatal("an interface ignored before the node knows its address")
	}
	n.onMapResponse(&tailcfg.MapResponse{
		Node: &tailcfg.Node{ID: 1, Key: n.ident.NodeKey.NodePublic(), Addresses: []netip.Prefix{self}, MachineAuthorized: true},
	})
	for _, tc := range []struct {
		name  string
		addrs []netip.Prefix
		want  bool
	}{
		{"mltun0", []netip.Prefix{self}, true},
		{"tun1", []netip.Prefix{netip.MustParsePrefix("fd7a:115c:a1e0::9/128")}, true},
		{"tailscale0", nil, true},
		{"eth0", uplink, false},
		{"wwan0", []netip.Prefix{netip.MustParsePrefix("100.64.0.8/10")}, false}, // a carrier-grade NAT uplink
	} {
		if got := n.ignoreInterface(tc.name, tc.addrs); got != tc.want {
			t.Errorf("ignoreInterface(%s, %v) = %v, want %v", tc.name, tc.addrs, got, tc.want)
		}
	}
}
