package netmap

import (
	"bytes"
	"net/netip"
	"runtime"
	"testing"

	"github.com/microlink-go/microlink/internal/netmap/netmaptest"
	"github.com/microlink-go/microlink/internal/tailcfg"
)

func syntheticNetmap(n int) []byte { return netmaptest.Netmap(n) }

// maxRetainedPerPeer is the goal for the heap a Map keeps per peer.
const maxRetainedPerPeer = 512

// TestRetainedPerPeer decodes a netmap of 10,000 peers and checks the heap
// the Map keeps for them. The figures at 50,000 peers, through the whole
// path from zstd frames, come from BenchmarkNetmapScale of internal/control.
func TestRetainedPerPeer(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 10k-peer netmap")
	}
	const n = 10000
	js := syntheticNetmap(n)
	base := netmaptest.LiveHeap()
	m := New(Options{})
	var d Decoder
	msg, err := d.Decode(bytes.NewReader(js))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Apply(msg); err != nil {
		t.Fatal(err)
	}
	msg = nil
	per := int(netmaptest.LiveHeap()-base) / n
	runtime.KeepAlive(js)
	runtime.KeepAlive(m)
	runtime.KeepAlive(&d)
	t.Logf("retained %d B/peer", per)
	if m.NumPeers() != n {
		t.Fatalf("%d peers", m.NumPeers())
	}
	if per > maxRetainedPerPeer {
		t.Errorf("retained %d B/peer, want <= %d", per, maxRetainedPerPeer)
	}
}

// BenchmarkDelta measures applying one small patch to a 50k-peer map.
func BenchmarkDelta(b *testing.B) {
	m := New(Options{})
	var d Decoder
	msg, err := d.Decode(bytes.NewReader(syntheticNetmap(50000)))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := m.Apply(msg); err != nil {
		b.Fatal(err)
	}
	eps := []netip.AddrPort{netip.MustParseAddrPort("203.0.113.1:41641")}
	online := true
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		nk := nodeKey(tailcfg.NodeID(i))
		resp := &tailcfg.MapResponse{PeersChangedPatch: []*tailcfg.PeerChange{{NodeID: tailcfg.NodeID(1 + i%50000), Endpoints: eps, Key: &nk, Online: &online}}}
		if _, err := m.Apply(&Message{MapResponse: resp}); err != nil {
			b.Fatal(err)
		}
	}
}
