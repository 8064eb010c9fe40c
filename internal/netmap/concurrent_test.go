package netmap

import (
	"sync"
	"testing"

	"github.com/microlink-go/microlink/internal/tailcfg"
)

// TestConcurrentReaders runs readers alongside Apply; with -race it checks
// that readers never share mutable state with the writer.
func TestConcurrentReaders(t *testing.T) {
	m := newTestMap(t, 1, 2, 3)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				for _, p := range m.Peers() {
					_ = len(p.Endpoints) + p.HomeDERP
				}
				peerByKey(m, nodeKey(2))
				m.PeerForDst(v4(3))
				m.Resolve("host1")
				m.DERPMap()
				m.FilterRules()
			}
		}()
	}
	for i := range 300 {
		id := tailcfg.NodeID(1 + i%3)
		applyResp(m, &tailcfg.MapResponse{
			PeersChangedPatch: []*tailcfg.PeerChange{{NodeID: id, DERPRegion: 1 + i}},
			PeersChanged:      []*tailcfg.Node{testNode(tailcfg.NodeID(4 + i%5))},
			PacketFilter:      []tailcfg.FilterRule{rule("x")},
			DERPMap:           &tailcfg.DERPMap{Regions: map[int]*tailcfg.DERPRegion{1: {RegionID: 1}}},
		})
	}
	close(stop)
	wg.Wait()
	checkInvariants(t, m)
}
