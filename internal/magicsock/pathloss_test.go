package magicsock

import (
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microlink-go/microlink/internal/disco"
	"github.com/microlink-go/microlink/internal/tailcfg"
)

// answerer answers the disco pings that reach a rawPeer, unless told to
// stay silent or to drop some.
type answerer struct {
	p      *rawPeer
	to     *node
	mute   atomic.Bool
	drop   atomic.Int32 // pings still to ignore
	mu     sync.Mutex
	muted  int // pings that arrived while mute was set
	closed chan struct{}
	wg     sync.WaitGroup
}

func answer(t *testing.T, p *rawPeer, to *node) *answerer {
	a := &answerer{p: p, to: to, closed: make(chan struct{})}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		buf := make([]byte, 2048)
		for {
			select {
			case <-a.closed:
				return
			default:
			}
			p.pc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			n, src, err := p.pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				continue
			}
			m, ok := p.sealer.Open(buf[:n], to.DiscoPublic())
			ping, isPing := m.(*disco.Ping)
			if !ok || !isPing {
				continue
			}
			if a.mute.Load() {
				a.mu.Lock()
				a.muted++
				a.mu.Unlock()
				continue
			}
			if a.drop.Load() > 0 {
				a.drop.Add(-1)
				continue
			}
			p.pc.WriteToUDPAddrPort(p.sealer.Seal(nil, to.DiscoPublic(), &disco.Pong{TxID: ping.TxID, Src: src}), src)
		}
	}()
	t.Cleanup(func() { close(a.closed); a.wg.Wait() })
	return a
}

// mutedPings returns how many pings went unanswered because of mute.
func (a *answerer) mutedPings() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.muted
}

// lossSetup is a node with local endpoints whose direct path to a raw
// peer is trusted, with a trust far longer than the loss timeout.
func lossSetup(t *testing.T) (*node, *rawPeer, *answerer, *captureDERP) {
	tm := fastTiming
	tm.trustUDP = 10 * time.Second
	tm.heartbeat = 300 * time.Millisecond // longer than the loss timeout, as by default
	tm.lossTimeout = 200 * time.Millisecond
	tm.pingTimeout = 10 * time.Second
	d := &captureDERP{sent: make(chan relayed, 256)}
	a := newNodeTiming(t, nil, Options{DERP: d}, tm)
	a.SetDERPMap(&tailcfg.DERPMap{Regions: map[int]*tailcfg.DERPRegion{1: {RegionID: 1, Nodes: []*tailcfg.DERPNode{{Name: "1a", RegionID: 1, IPv4: "none", IPv6: "none", STUNPort: -1}}}}})
	waitFor(t, 2*time.Second, "endpoints", func() bool { return len(a.Endpoints()) > 0 })
	p := newRawPeer(t)
	pp := p.peer()
	pp.Endpoints = []netip.AddrPort{p.addr}
	a.SetPeers([]Peer{pp})
	ans := answer(t, p, a)
	waitFor(t, 3*time.Second, "a trusted direct path", func() bool {
		a.Send(p.node.NodePublic(), []byte(wgMsg))
		st, _ := a.PeerStatus(p.node.NodePublic())
		return st.Trusted && st.Addr == p.addr
	})
	return a, p, ans, d
}

// keepSending sends to the peer every 10 ms until the test ends, as a
// stream of data would.
func keepSending(t *testing.T, a *node, p *rawPeer) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			case <-time.After(10 * time.Millisecond):
				a.Send(p.node.NodePublic(), []byte(wgMsg))
			}
		}
	}()
	t.Cleanup(func() { close(done); wg.Wait() })
}

// withdrawals returns the call-me-maybes relayed to p since the channel
// was last drained.
func withdrawals(t *testing.T, d *captureDERP, a *node, p *rawPeer) []*disco.CallMeMaybe {
	var out []*disco.CallMeMaybe
	for {
		select {
		case r := <-d.sent:
			if m, ok := p.sealer.Open(r.pkt, a.DiscoPublic()); ok {
				if cmm, ok := m.(*disco.CallMeMaybe); ok {
					out = append(out, cmm)
				}
			}
		default:
			return out
		}
	}
}

func TestSilentPathLosesTrustBeforeTrustRunsOut(t *testing.T) {
	a, p, ans, d := lossSetup(t)
	keepSending(t, a, p)
	time.Sleep(300 * time.Millisecond) // a few heartbeats answered
	for len(d.sent) > 0 {
		<-d.sent
	}
	ans.mute.Store(true)
	cut := time.Now()
	waitFor(t, 2*time.Second, "the path to lose trust", func() bool {
		st, _ := a.PeerStatus(p.node.NodePublic())
		return !st.Trusted
	})
	lost := time.Since(cut)
	// One heartbeat period, then the loss timeout; far less than trustUDP.
	if lost > time.Second {
		t.Errorf("trust lasted %v after the path went silent", lost)
	}
	if n := ans.mutedPings(); n < 1+probeRetries {
		t.Errorf("%d pings unanswered after the path went silent, want the heartbeat and %d retries", n, probeRetries)
	}
	// The peer is told over DERP, without the endpoint it saw us at.
	var cmms []*disco.CallMeMaybe
	waitFor(t, time.Second, "a call-me-maybe over DERP", func() bool {
		cmms = append(cmms, withdrawals(t, d, a, p)...)
		return len(cmms) > 0
	})
	if slices.Contains(cmms[0].MyNumber, a.udpTo) {
		t.Errorf("call-me-maybe after the loss lists %v, the endpoint the peer could not reach: %v", a.udpTo, cmms[0].MyNumber)
	}
	// Data now goes over DERP as well.
	relayedWG := func() bool {
		for {
			select {
			case r := <-d.sent:
				if string(r.pkt) == wgMsg {
					return true
				}
			default:
				return false
			}
		}
	}
	waitFor(t, time.Second, "data over DERP", relayedWG)
	// When pongs come back, so does the trust.
	ans.mute.Store(false)
	waitFor(t, 2*time.Second, "trust again", func() bool {
		st, _ := a.PeerStatus(p.node.NodePublic())
		return st.Trusted && st.Addr == p.addr
	})
}

func TestOneLostPingKeepsTrust(t *testing.T) {
	a, p, ans, d := lossSetup(t)
	keepSending(t, a, p)
	time.Sleep(300 * time.Millisecond)
	withdrawals(t, d, a, p)
	for range 3 {
		ans.drop.Store(1)
		t0 := time.Now()
		for time.Since(t0) < 700*time.Millisecond {
			if st, _ := a.PeerStatus(p.node.NodePublic()); !st.Trusted {
				t.Fatal("one lost heartbeat ended the trust in the path")
			}
			time.Sleep(5 * time.Millisecond)
		}
		if ans.drop.Load() != 0 {
			t.Fatal("no heartbeat was dropped")
		}
	}
	if w := withdrawals(t, d, a, p); len(w) > 0 {
		t.Fatalf("call-me-maybe sent though the path answered: %+v", w[0])
	}
}

// TestPathCarryingTrafficKeepsTrust: heartbeats go unanswered, as in a
// burst of loss, but the peer's WireGuard traffic keeps arriving over the
// path: its trust is not ended early and no withdrawal goes to the peer,
// until the trust runs its course (trustUDP after the last pong). A path
// that then brings nothing is given up after the loss timeout again.
func TestPathCarryingTrafficKeepsTrust(t *testing.T) {
	a, p, ans, d := lossSetup(t)
	keepSending(t, a, p)
	time.Sleep(300 * time.Millisecond)
	withdrawals(t, d, a, p)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the peer's traffic, over the path
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
				p.pc.WriteToUDPAddrPort([]byte(wgMsg), a.udpTo)
			}
		}
	}()
	ans.mute.Store(true)
	t0 := time.Now()
	for time.Since(t0) < 1500*time.Millisecond { // several heartbeats and loss timeouts
		if st, _ := a.PeerStatus(p.node.NodePublic()); !st.Trusted {
			close(stop)
			wg.Wait()
			t.Fatalf("trust ended %v after the pings went unanswered, though traffic kept coming", time.Since(t0))
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := ans.mutedPings(); n < 2 {
		t.Fatalf("%d heartbeats went unanswered, want several", n)
	}
	if w := withdrawals(t, d, a, p); len(w) > 0 {
		t.Fatalf("call-me-maybe withdrawal sent though the path carried traffic: %+v", w[0])
	}
	close(stop)
	wg.Wait()
	waitFor(t, 2*time.Second, "the silent path to lose trust", func() bool {
		st, _ := a.PeerStatus(p.node.NodePublic())
		return !st.Trusted
	})
}

func TestLossTimeoutFollowsLatency(t *testing.T) {
	c := &Conn{tm: defaultTiming}
	if got := c.lossTimeout(&peer{bestLatency: 20 * time.Millisecond}); got != defaultTiming.lossTimeout {
		t.Errorf("loss timeout at 20 ms: %v", got)
	}
	if got := c.lossTimeout(&peer{bestLatency: 900 * time.Millisecond}); got != 3600*time.Millisecond {
		t.Errorf("loss timeout at 900 ms: %v", got)
	}
}

func TestWithdrawnEndpointEndsPath(t *testing.T) {
	a := newNode(t, nil, Options{DERP: &captureDERP{sent: make(chan relayed, 256)}})
	p := newRawPeer(t)
	pp := p.peer()
	pp.Endpoints = []netip.AddrPort{p.addr} // in the netmap as well
	a.SetPeers([]Peer{pp})
	ans := answer(t, p, a)
	cmm := func(eps ...netip.AddrPort) {
		a.ReceiveDERP(1, p.node.NodePublic(), p.sealer.Seal(nil, a.DiscoPublic(), &disco.CallMeMaybe{MyNumber: eps}))
	}
	cmm(p.addr)
	waitFor(t, 2*time.Second, "a direct path to the call-me-maybe endpoint", func() bool {
		st, _ := a.PeerStatus(p.node.NodePublic())
		return st.Addr == p.addr
	})
	ans.mute.Store(true)
	other := netip.MustParseAddrPort("127.0.0.1:9")
	cmm(other)
	if st, _ := a.PeerStatus(p.node.NodePublic()); st.Addr.IsValid() {
		t.Fatalf("path %v kept after the peer withdrew it", st.Addr)
	}
	// A netmap endpoint stays a candidate, pinged again.
	if st, _ := a.PeerStatus(p.node.NodePublic()); !slices.Contains(st.Endpoints, p.addr) {
		t.Fatalf("candidates %v lack the netmap endpoint", st.Endpoints)
	}
}

// TestPathFromPeersPingsSendsCallMeMaybe: a direct path the peer's own
// call-me-maybe and pings proved, before this node sent it anything, is
// followed by a call-me-maybe of ours: the peer then holds our endpoints
// as call-me-maybe endpoints, which is what lets a later withdrawal (see
// pathLost) end its trust in a dead path.
func TestPathFromPeersPingsSendsCallMeMaybe(t *testing.T) {
	d := &captureDERP{sent: make(chan relayed, 256)}
	a := newNode(t, nil, Options{DERP: d})
	a.mu.Lock()
	a.endpoints = []Endpoint{{AddrPort: a.udpTo, Type: 1}}
	a.epTime = time.Now()
	a.mu.Unlock()
	p := newRawPeer(t)
	a.SetPeers([]Peer{p.peer()})
	answer(t, p, a)
	a.ReceiveDERP(1, p.node.NodePublic(), p.sealer.Seal(nil, a.DiscoPublic(), &disco.CallMeMaybe{MyNumber: []netip.AddrPort{p.addr}}))
	waitFor(t, 2*time.Second, "a trusted direct path", func() bool {
		st, _ := a.PeerStatus(p.node.NodePublic())
		return st.Trusted
	})
	deadline := time.After(time.Second)
	for {
		select {
		case r := <-d.sent:
			m, ok := p.sealer.Open(r.pkt, a.DiscoPublic())
			if cmm, isCMM := m.(*disco.CallMeMaybe); ok && isCMM && slices.Contains(cmm.MyNumber, a.udpTo) {
				return
			}
		case <-deadline:
			t.Fatal("no call-me-maybe listing our endpoint sent to the peer")
		}
	}
}

// TestLateTimerStillRetries: when the timers run late (a loaded machine,
// a process that was stopped), an unanswered heartbeat is still retried,
// each retry given its share of the loss timeout, before the path is
// taken as lost: lateness alone is no loss.
func TestLateTimerStillRetries(t *testing.T) {
	tm := fastTiming
	tm.tick = time.Hour // this test runs the timers itself
	a := newNodeTiming(t, nil, Options{DERP: &captureDERP{sent: make(chan relayed, 64)}}, tm)
	p := newRawPeer(t)
	pp := p.peer()
	pp.Endpoints = []netip.AddrPort{p.addr}
	a.SetPeers([]Peer{pp})

	a.mu.Lock()
	defer a.mu.Unlock()
	q := a.peers[p.node.NodePublic()]
	now := time.Now()
	q.setBest(p.addr, time.Millisecond, now.Add(time.Hour))
	q.probeAt, q.probeTries = now, 0 // a heartbeat went out now
	lt := a.lossTimeout(q)
	step := lt / (probeRetries + 1)
	pings := func() int {
		n := 0
		for _, o := range a.outbox {
			if o.udp == p.addr {
				n++
			}
		}
		a.outbox = nil
		return n
	}
	trusted := func(at time.Time) bool { return at.Before(q.bestUntil) }

	late := now.Add(2 * lt) // the timers wake long after the loss timeout
	for i := range probeRetries {
		a.checkProbes(late)
		if !trusted(late) || pings() != 1 {
			t.Fatalf("retry %d: trusted %v, want a retry and the path still trusted", i+1, trusted(late))
		}
		if a.checkProbes(late.Add(step - time.Millisecond)); !trusted(late) || pings() != 0 {
			t.Fatalf("retry %d was not given its time", i+1)
		}
		late = late.Add(step)
	}
	a.checkProbes(late)
	if trusted(late) {
		t.Fatal("the path is still trusted after the heartbeat and all retries went unanswered")
	}
}
