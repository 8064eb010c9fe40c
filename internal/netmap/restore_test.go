package netmap

import (
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/microlink-go/microlink/internal/tailcfg"
)

func TestRestore(t *testing.T) {
	m := New(Options{})
	a := refPeer(testNode(1))
	b := refPeer(testNode(2))
	b.AllowedIPs = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	dm := &tailcfg.DERPMap{Regions: map[int]*tailcfg.DERPRegion{1: {RegionID: 1}, 2: nil}}
	c := m.Restore([]Peer{a, b}, dm)
	checkInvariants(t, m)
	if !c.Full || !c.DERPMapChanged || len(c.PeersAdded) != 2 {
		t.Fatalf("changes = %+v", c)
	}
	if p, ok := m.PeerForDst(netip.MustParseAddr("10.1.1.1")); !ok || p.ID != 2 {
		t.Fatal("restored route not found")
	}
	if p, ok := peerByKey(m, a.Key); !ok || p.HasOwnAllowedIPs() {
		t.Fatal("restored peer not found by key")
	}
	if len(m.DERPMap().Regions) != 1 {
		t.Fatal("restored DERP map wrong")
	}
	// The stream's first message still needs the self node, and replaces
	// the restored peers.
	if _, err := applyResp(m, &tailcfg.MapResponse{Domain: "x"}); !errors.Is(err, ErrNoSelfNode) {
		t.Fatalf("err = %v", err)
	}
	mustApply(t, m, &tailcfg.MapResponse{Node: selfNode(), Peers: []*tailcfg.Node{testNode(3)}})
	if got := peerIDs(m); !slices.Equal(got, []tailcfg.NodeID{3}) {
		t.Fatalf("peers = %v", got)
	}
}
