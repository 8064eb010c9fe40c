package wireguard

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/microlink-go/microlink/internal/key"
)

// firstInitiation returns the initiation a sent to set up sp's session.
func (sp *sinkPair) firstInitiation(t *testing.T) []byte {
	t.Helper()
	for _, m := range sp.w.sentOfType(TypeInitiation) {
		if m.from == sp.a.pub {
			return m.data
		}
	}
	t.Fatal("no initiation sent")
	return nil
}

// TestTransportNotBehindHandshakes: while the handshake goroutine is
// stuck, handshake messages are queued or dropped at once and transport
// messages are still delivered.
func TestTransportNotBehindHandshakes(t *testing.T) {
	sp := newSinkPair(t)
	init := sp.firstInitiation(t)
	data := sp.messages(t, 2*handshakeQueueLen, ipv4Packet(sp.a.addr, sp.b.addr, 1280, 1))
	d := sp.b.dev
	d.hsMu.Lock() // the handshake goroutine blocks on its first message
	done := make(chan struct{})
	before := sp.received
	go func() {
		defer close(done)
		for i := range 2 * handshakeQueueLen {
			d.ReceiveFrom(append([]byte(nil), init...), []byte{1, 2, 3, 4})
			d.ReceiveFrom(data[i], nil)
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		d.hsMu.Unlock()
		t.Fatal("ReceiveFrom waited for the handshake goroutine")
	}
	delivered := sp.received - before
	d.hsMu.Unlock()
	settle(t, d)
	if delivered != 2*handshakeQueueLen {
		t.Fatalf("%d of %d transport messages delivered", delivered, 2*handshakeQueueLen)
	}
	if s := d.Stats(); s.HandshakesDropped < handshakeQueueLen-1 {
		t.Fatalf("%d handshake messages dropped, want the queue's overflow", s.HandshakesDropped)
	}
}

// TestHandshakeFloodAllocs: under a flood of handshake messages, a
// transport message and a handshake message cost no allocation on the
// receive path, whether the handshake is queued or dropped.
func TestHandshakeFloodAllocs(t *testing.T) {
	sp := newSinkPair(t)
	init := sp.firstInitiation(t)
	const runs = 400
	data := sp.messages(t, runs+1, ipv4Packet(sp.a.addr, sp.b.addr, 1280, 1))
	d := sp.b.dev
	// Create every job of the queue once.
	d.hsMu.Lock()
	for range handshakeQueueLen + 1 {
		d.ReceiveFrom(init, nil)
	}
	d.hsMu.Unlock()
	settle(t, d)
	d.hsMu.Lock()
	defer d.hsMu.Unlock()
	src := []byte{1, 2, 3, 4}
	i := 0
	allocs := testing.AllocsPerRun(runs, func() {
		d.ReceiveFrom(init, src)
		if _, ok := d.ReceiveFrom(data[i], nil); !ok {
			t.Fatal("transport message refused")
		}
		i++
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per transport and handshake message", allocs)
	}
	if d.Stats().HandshakesDropped == 0 {
		t.Fatal("the queue never filled")
	}
}

// TestHandshakeRateLimit: under load, handshake messages with a valid
// mac2 from one host are held to a burst of five, however many peers and
// ports they come from; another host is not held back by it.
func TestHandshakeRateLimit(t *testing.T) {
	w := newWire()
	clock := newFakeClock()
	type reply struct{ src, msg []byte }
	var cookies []reply
	r := w.newNode(t, clock, "100.64.0.1", func(c *Config) {
		c.UnderLoad = func() bool { return true }
		c.HostOf = func(src []byte) []byte { return src[:len(src)-2] }
		c.SendCookieReply = func(src, msg []byte) error {
			cookies = append(cookies, reply{append([]byte(nil), src...), append([]byte(nil), msg...)})
			return nil
		}
	})
	const n = 20
	var peers []PeerConfig
	var inits []*node
	srcOf := map[key.NodePublic][]byte{}
	for k := range n + 1 {
		i := w.newNode(t, clock, fmt.Sprintf("100.64.1.%d", k+1), nil)
		i.dev.SetPeers([]PeerConfig{{Key: r.pub, AllowedIPs: []netip.Prefix{netip.PrefixFrom(r.addr, 32)}}})
		peers = append(peers, PeerConfig{Key: i.pub, AllowedIPs: []netip.Prefix{netip.PrefixFrom(i.addr, 32)}})
		inits = append(inits, i)
		host := "host-a"
		if k == n {
			host = "host-b" // the last initiator sends from another host
		}
		srcOf[i.pub] = append([]byte(host), byte(k>>8), byte(k))
	}
	r.dev.SetPeers(peers)
	// deliver hands r the initiations queued on the wire, each from its
	// initiator's address, and returns how many r answered.
	deliver := func() int {
		w.mu.Lock()
		q := w.queue
		w.queue = nil
		w.mu.Unlock()
		answered := r.dev.Stats().HandshakesCompleted
		for _, m := range q {
			if m.to == r.pub && messageType(m.data) == TypeInitiation {
				receive(t, r.dev, m.data, srcOf[m.from])
			}
		}
		return int(r.dev.Stats().HandshakesCompleted - answered)
	}
	for _, i := range inits {
		i.dev.SendTo(r.pub, ipv4Packet(i.addr, r.addr, 60, 1))
	}
	if got := deliver(); got != 0 || len(cookies) != n+1 {
		t.Fatalf("without mac2: %d answered, %d cookie replies", got, len(cookies))
	}
	for _, c := range cookies {
		for _, i := range inits {
			if string(srcOf[i.pub]) == string(c.src) {
				receive(t, i.dev, c.msg, nil)
			}
		}
	}
	// The retransmitted initiations carry mac2 and arrive together.
	clock.Advance(RekeyTimeout + RekeyTimeoutJitterMax)
	for _, i := range inits {
		i.dev.EvaluateTimers()
	}
	if got := deliver(); got != limitBurst+1 {
		t.Fatalf("%d of %d initiations with mac2 answered, want %d from host-a and 1 from host-b", got, n+1, limitBurst)
	}
	if s := r.dev.Stats(); s.HandshakesRateLimited != n-limitBurst {
		t.Fatalf("%d rate-limited, want %d", s.HandshakesRateLimited, n-limitBurst)
	}
}

// TestRateLimiterRefillAndBound: a host's bucket refills at 20 a second,
// and the limiter remembers at most limitMaxHosts hosts.
func TestRateLimiterRefillAndBound(t *testing.T) {
	var l rateLimiter
	now := time.Unix(1_700_000_000, 0)
	host := []byte("h")
	for i := range limitBurst {
		if !l.allow(host, now) {
			t.Fatalf("message %d of the burst refused", i+1)
		}
	}
	if l.allow(host, now) {
		t.Fatal("message beyond the burst allowed")
	}
	if !l.allow(host, now.Add(time.Second/limitPerSecond)) || l.allow(host, now.Add(time.Second/limitPerSecond)) {
		t.Fatal("not one message per 50 ms after the burst")
	}
	for i := range 3 * limitMaxHosts {
		l.allow(fmt.Appendf(nil, "host%d", i), now)
	}
	if len(l.hosts) > limitMaxHosts {
		t.Fatalf("%d hosts remembered", len(l.hosts))
	}
}

// TestSecretsZeroed: a peer's static-static secret and handshake state
// are wiped when its state is dropped, and Close wipes the device's
// private key and cookie secret.
func TestSecretsZeroed(t *testing.T) {
	w, _, a, b := setupPair(t)
	a.dev.SendTo(b.pub, ipv4Packet(a.addr, b.addr, 60, 1))
	w.pump(t)
	p := a.dev.peers[b.pub]
	p.mu.Lock()
	st := p.st
	p.mu.Unlock()
	if st == nil || st.ss == [32]byte{} {
		t.Fatal("no session secret to begin with")
	}
	a.dev.SetPeers(nil)
	if st.ss != [32]byte{} || st.hs != (handshake{}) {
		t.Fatalf("dropped session keeps its secrets: ss %x, handshake %+v", st.ss, st.hs)
	}

	// Under load, b issued a cookie: its secret goes with Close.
	b.dev.hsMu.Lock()
	b.dev.checker.createReply(make([]byte, InitiationSize), []byte("src"), time.Now())
	b.dev.hsMu.Unlock()
	b.dev.Close()
	if !b.dev.static.IsZero() || b.dev.checker.secret != [32]byte{} {
		t.Fatal("Close left the private key or the cookie secret")
	}
	if p := b.dev.Stats(); p.Peers != 0 {
		t.Fatalf("closed device has %d peers", p.Peers)
	}
}
