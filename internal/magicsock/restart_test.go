package magicsock

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/microlink-go/microlink/internal/disco"
	"github.com/microlink-go/microlink/internal/key"
)

// heardLog records the OnPeerHeard calls of a Conn.
type heardLog struct {
	mu   sync.Mutex
	keys []key.NodePublic
}

func (h *heardLog) add(k key.NodePublic) {
	h.mu.Lock()
	h.keys = append(h.keys, k)
	h.mu.Unlock()
}

func (h *heardLog) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.keys)
}

func (h *heardLog) first() key.NodePublic {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.keys[0]
}

// TestPeerHeardOnce: the first disco message from a peer tells the data
// plane that the peer knows our disco key; later ones do not, until the
// peer restarts with a new disco key.
func TestPeerHeardOnce(t *testing.T) {
	var heard heardLog
	a := newNode(t, nil, Options{DERP: &captureDERP{sent: make(chan relayed, 64)}, OnPeerHeard: heard.add})
	p := newRawPeer(t)
	pp := p.peer()
	a.SetPeers([]Peer{pp})

	p.send(t, a, &disco.Ping{TxID: [12]byte{1}, NodeKey: p.node.NodePublic()})
	waitFor(t, 2*time.Second, "OnPeerHeard", func() bool { return heard.count() == 1 })
	if got := heard.first(); got != p.node.NodePublic() {
		t.Fatalf("OnPeerHeard(%v), want the peer", got)
	}
	p.send(t, a, &disco.Ping{TxID: [12]byte{2}, NodeKey: p.node.NodePublic()})
	p.read(t, a, 100*time.Millisecond) // both pongs are back: both pings were handled
	if n := heard.count(); n != 1 {
		t.Fatalf("OnPeerHeard called %d times, want once", n)
	}

	// The peer restarts: a new disco key, and a first message again.
	p.sealer = disco.NewSealer(key.NewPrivate(), 0)
	if got := a.SetPeers([]Peer{p.peer()}); !slices.Equal(got, []key.NodePublic{p.node.NodePublic()}) {
		t.Fatalf("SetPeers reported %v restarted", got)
	}
	p.send(t, a, &disco.Ping{TxID: [12]byte{3}, NodeKey: p.node.NodePublic()})
	waitFor(t, 2*time.Second, "OnPeerHeard after the restart", func() bool { return heard.count() == 2 })
}

// TestRestartedPeers: a peer restarted when its disco key changes from
// one key to another, not when one appears or goes away.
func TestRestartedPeers(t *testing.T) {
	a := newNode(t, nil, Options{DERP: &captureDERP{sent: make(chan relayed, 64)}})
	k := key.NewPrivate().NodePublic()
	d := func() key.DiscoPublic { return key.NewPrivate().DiscoPublic() }
	peer := func(dk key.DiscoPublic) Peer { return Peer{Key: k, DiscoKey: dk, HomeDERP: 1} }
	want := []key.NodePublic{k}

	if got := a.SetPeers([]Peer{peer(d())}); got != nil {
		t.Fatalf("new peer reported restarted: %v", got)
	}
	same := d()
	a.SetPeers([]Peer{peer(same)})
	if got := a.SetPeers([]Peer{peer(same)}); got != nil {
		t.Fatalf("unchanged peer reported restarted: %v", got)
	}
	if got := a.UpdatePeers([]Peer{peer(d())}, nil); !slices.Equal(got, want) {
		t.Fatalf("UpdatePeers with a new disco key: %v", got)
	}
	if got := a.UpdatePeers([]Peer{peer(key.DiscoPublic{})}, nil); got != nil {
		t.Fatalf("disco key gone: %v", got)
	}
	if got := a.UpdatePeers([]Peer{peer(d())}, nil); got != nil {
		t.Fatalf("disco key back from none: %v", got)
	}
	if got := a.UpdatePeers([]Peer{{Key: key.NewPrivate().NodePublic(), DiscoKey: d()}}, nil); got != nil {
		t.Fatalf("another new peer: %v", got)
	}
}

// TestUnheardPingsThroughDERP: while we send to a peer that has not
// answered yet, which may not know our new disco key, it gets a ping
// through DERP every unheardPing, so that its first answer comes as soon
// as it knows. Once heard, DERP carries no more discovery pings.
func TestUnheardPingsThroughDERP(t *testing.T) {
	d := &captureDERP{sent: make(chan relayed, 256)}
	a := newNode(t, nil, Options{DERP: d})
	p := newRawPeer(t)
	pp := p.peer()
	a.SetPeers([]Peer{pp})
	derpPings := func(within time.Duration) int {
		n := 0
		deadline := time.After(within)
		for {
			select {
			case r := <-d.sent:
				if m, ok := p.sealer.Open(r.pkt, a.DiscoPublic()); ok {
					if _, ok := m.(*disco.Ping); ok {
						n++
					}
				}
			case <-deadline:
				return n
			}
		}
	}
	if err := a.Send(p.node.NodePublic(), []byte(wgMsg)); err != nil {
		t.Fatal(err)
	}
	if n := derpPings(10 * fastTiming.unheardPing); n < 3 {
		t.Fatalf("%d pings through DERP in 10 unheardPing, want at least 3", n)
	}
	p.send(t, a, &disco.Ping{TxID: [12]byte{1}, NodeKey: p.node.NodePublic()})
	p.read(t, a, 50*time.Millisecond) // its pong: the ping was handled
	derpPings(fastTiming.unheardPing) // what was already on its way
	a.Send(p.node.NodePublic(), []byte(wgMsg))
	if n := derpPings(3 * fastTiming.unheardPing); n != 0 {
		t.Fatalf("%d pings through DERP to a peer heard from", n)
	}
}
