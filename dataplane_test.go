package microlink

import (
	"io"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/microlink-go/microlink/internal/key"
	"github.com/microlink-go/microlink/internal/netmap"
	"github.com/microlink-go/microlink/internal/packet"
	"github.com/microlink-go/microlink/internal/tailcfg"
	"github.com/microlink-go/microlink/internal/tunnel"
)

func newTestDataPlane(t testing.TB) *dataPlane {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	stack := tunnel.New(tunnel.Config{Output: func([]byte) error { return nil }, Logger: logger})
	d, err := newDataPlane(dataPlaneConfig{Stack: stack, NodeKey: key.NewPrivate(), DiscoKey: key.NewPrivate(), Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.close(); stack.Close() })
	return d
}

// TestDeltasMatchFullRebuild applies random netmap deltas peer by peer
// and checks that the data plane ends up knowing exactly the netmap's
// peers, as a full rebuild would.
func TestDeltasMatchFullRebuild(t *testing.T) {
	d := newTestDataPlane(t)
	nm := netmap.New(netmap.Options{})
	ch, err := nm.Apply(mapMessage(t, bigNetmap(40)))
	if err != nil {
		t.Fatal(err)
	}
	d.apply(nm, ch)
	rng := rand.New(rand.NewPCG(3, 4))
	var everKeys []key.NodePublic
	nm.ForEachPeer(func(p *netmap.Peer) bool { everKeys = append(everKeys, p.Key); return true })
	nextID := tailcfg.NodeID(1000)
	past := time.Now().Add(-time.Hour)
	for step := range 300 {
		id := tailcfg.NodeID(2 + rng.IntN(40))
		resp := &tailcfg.MapResponse{}
		switch rng.IntN(5) {
		case 0: // roam
			resp.PeersChangedPatch = []*tailcfg.PeerChange{{NodeID: id, Endpoints: []netip.AddrPort{netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(step)}), 41641)}}}
		case 1: // new node key
			k := key.NewPrivate().NodePublic()
			everKeys = append(everKeys, k)
			resp.PeersChangedPatch = []*tailcfg.PeerChange{{NodeID: id, Key: &k}}
		case 2: // leave
			resp.PeersRemoved = []tailcfg.NodeID{id}
		case 3: // join
			n := bigNetmap(1).Peers[0]
			n.ID = nextID
			nextID++
			everKeys = append(everKeys, n.Key)
			resp.PeersChanged = []*tailcfg.Node{n}
		case 4: // key expires
			resp.PeersChangedPatch = []*tailcfg.PeerChange{{NodeID: id, KeyExpiry: &past}}
		}
		ch, err := nm.Apply(mapMessage(t, resp))
		if err != nil {
			t.Fatal(err)
		}
		d.apply(nm, ch)
	}
	now := nm.Now()
	want := map[key.NodePublic]*netmap.Peer{}
	nm.ForEachPeer(func(p *netmap.Peer) bool { q := *p; want[p.Key] = &q; return true })
	for _, k := range everKeys {
		p := want[k]
		st, inMS := d.ms.PeerStatus(k)
		_, inWG := d.wg.PeerStats(k)
		switch {
		case p == nil:
			if inMS || inWG {
				t.Errorf("%v left the netmap but magicsock has it: %v, WireGuard: %v", k.ShortString(), inMS, inWG)
			}
		case !inMS:
			t.Errorf("%v missing from magicsock", k.ShortString())
		case inWG == p.ExpiredAt(now):
			t.Errorf("%v in WireGuard: %v, expired: %v", k.ShortString(), inWG, p.ExpiredAt(now))
		default:
			for _, ep := range p.Endpoints {
				if !slices.Contains(st.Endpoints, ep) {
					t.Errorf("%v: magicsock endpoints %v lack %v", k.ShortString(), st.Endpoints, ep)
				}
			}
		}
	}
	if s := d.wg.Stats(); s.Peers > len(want) {
		t.Errorf("WireGuard has %d peers, the netmap %d", s.Peers, len(want))
	}
}

// TestFilterBeforePeers: a netmap's packet filter is in place before its
// peers can reach the node, on the first netmap and on a delta that
// brings both a new peer and new rules.
func TestFilterBeforePeers(t *testing.T) {
	d := newTestDataPlane(t)
	var atPeers *packet.Filter
	d.peersApplied = func() { atPeers = d.stack.Filter() }
	nm := netmap.New(netmap.Options{})
	first := bigNetmap(3)
	first.PacketFilter = []tailcfg.FilterRule{{SrcIPs: []string{"*"}, DstPorts: []tailcfg.NetPortRange{{IP: "*", Ports: tailcfg.PortRange{First: 22, Last: 22}}}}}
	ch, err := nm.Apply(mapMessage(t, first))
	if err != nil {
		t.Fatal(err)
	}
	before := d.stack.Filter()
	d.apply(nm, ch)
	if atPeers == nil || atPeers == before || atPeers != d.stack.Filter() {
		t.Fatal("peers of the first netmap installed before its filter")
	}

	joined := bigNetmap(1).Peers[0]
	joined.ID = 100
	ch, err = nm.Apply(mapMessage(t, &tailcfg.MapResponse{
		PeersChanged: []*tailcfg.Node{joined},
		PacketFilter: []tailcfg.FilterRule{{SrcIPs: []string{"*"}, DstPorts: []tailcfg.NetPortRange{{IP: "*", Ports: tailcfg.PortRange{First: 80, Last: 80}}}}},
	}))
	if err != nil {
		t.Fatal(err)
	}
	before, atPeers = d.stack.Filter(), nil
	d.apply(nm, ch)
	if atPeers == nil || atPeers == before || atPeers != d.stack.Filter() {
		t.Fatal("a delta's new peer installed before its filter")
	}
}
