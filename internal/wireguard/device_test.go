package wireguard

import (
	"bytes"
	"errors"
	"github.com/microlink-go/microlink/internal/key"
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

func setupPair(t *testing.T) (*wire, *fakeClock, *node, *node) {
	t.Helper()
	w := newWire()
	clock := newFakeClock()
	a := w.newNode(t, clock, "100.64.0.1", nil)
	b := w.newNode(t, clock, "100.64.0.2", nil)
	connect(a, b)
	return w, clock, a, b
}

func TestHandshakeAndDataBothWays(t *testing.T) {
	w, _, a, b := setupPair(t)
	p1 := ipv4Packet(a.addr, b.addr, 100, 1)
	if err := a.dev.SendTo(b.pub, p1); err != nil {
		t.Fatal(err)
	}
	w.pump(t)
	got := b.delivered()
	if len(got) != 1 || !bytes.Equal(got[0], p1) {
		t.Fatalf("b got %d packets, want the staged one", len(got))
	}
	if n := len(w.sentOfType(TypeInitiation)); n != 1 {
		t.Fatalf("%d initiations, want 1", n)
	}
	if n := len(w.sentOfType(TypeResponse)); n != 1 {
		t.Fatalf("%d responses, want 1", n)
	}

	p2 := ipv4Packet(b.addr, a.addr, 1280, 2)
	if err := b.dev.SendPacket(p2); err != nil {
		t.Fatal(err)
	}
	w.pump(t)
	if got := a.delivered(); len(got) != 1 || !bytes.Equal(got[0], p2) {
		t.Fatalf("a got %d packets, want b's", len(got))
	}
	// Padding: a 100-byte packet travels as 112 bytes of ciphertext + tag.
	for _, m := range w.sentOfType(TypeTransport) {
		if (len(m.data)-KeepaliveSize)%PaddingMultiple != 0 {
			t.Errorf("transport message of %d bytes is not padded", len(m.data))
		}
	}
	sa, ok := a.dev.PeerStats(b.pub)
	if !ok || !sa.HasSession || sa.LastHandshake.IsZero() || sa.TxPackets == 0 || sa.RxPackets == 0 {
		t.Errorf("a's stats of b: %+v", sa)
	}
	if s := a.dev.Stats(); s.HandshakesCompleted != 1 || s.PacketsIn != 1 || s.ActivePeers != 1 {
		t.Errorf("a stats: %+v", s)
	}
}

// TestCrossedInitiations: both sides have a packet waiting and initiate
// at once, as after a restart when each has traffic for the other. Each
// answers the other's initiation and keeps its own, so the response to
// it completes the handshake without waiting RekeyTimeout for a retry,
// whether the peer keeps its own initiation too (microlink) or drops it
// when it answers ours (wireguard-go, modelled by losing our response,
// which such a peer ignores).
func TestCrossedInitiations(t *testing.T) {
	for _, peerDropsOwn := range []bool{false, true} {
		name := "both keep their initiations"
		if peerDropsOwn {
			name = "peer drops its own initiation"
		}
		t.Run(name, func(t *testing.T) {
			w, _, a, b := setupPair(t)
			if peerDropsOwn {
				w.drop = func(m wireMsg) bool { return m.from == a.pub && messageType(m.data) == TypeResponse }
			}
			a.dev.SendTo(b.pub, ipv4Packet(a.addr, b.addr, 60, 1))
			b.dev.SendTo(a.pub, ipv4Packet(b.addr, a.addr, 60, 2))
			if n := len(w.sentOfType(TypeInitiation)); n != 2 {
				t.Fatalf("%d initiations before delivery, want one each", n)
			}
			// No time passes: no timer may help.
			w.pump(t)
			if len(a.delivered()) != 1 || len(b.delivered()) != 1 {
				t.Fatalf("delivered a=%d b=%d without a retry, want 1 each", len(a.delivered()), len(b.delivered()))
			}
			if n := len(w.sentOfType(TypeInitiation)); n != 2 {
				t.Errorf("%d initiations, want 2: nothing was retried", n)
			}
			for range 3 {
				a.dev.SendTo(b.pub, ipv4Packet(a.addr, b.addr, 60, 3))
				b.dev.SendTo(a.pub, ipv4Packet(b.addr, a.addr, 60, 4))
				w.pump(t)
			}
			if len(a.delivered()) != 4 || len(b.delivered()) != 4 {
				t.Fatalf("delivered a=%d b=%d, want 4 each", len(a.delivered()), len(b.delivered()))
			}
			for _, n := range []*node{a, b} {
				if s := n.dev.Stats(); s.HandshakeInitiationsSent != 1 {
					t.Errorf("%d initiations sent by one side, want 1", s.HandshakeInitiationsSent)
				}
			}
		})
	}
}

func TestReplayedTransportRejected(t *testing.T) {
	w, _, a, b := setupPair(t)
	a.dev.SendTo(b.pub, ipv4Packet(a.addr, b.addr, 60, 1))
	w.pump(t)
	a.dev.SendTo(b.pub, ipv4Packet(a.addr, b.addr, 80, 2))
	w.mu.Lock()
	replay := append([]byte(nil), w.queue[len(w.queue)-1].data...)
	w.mu.Unlock()
	w.pump(t)
	if n := len(b.delivered()); n != 2 {
		t.Fatalf("delivered %d, want 2", n)
	}
	if _, ok := b.dev.Receive(replay); ok {
		t.Fatal("replayed transport message accepted")
	}
	if n := len(b.delivered()); n != 2 {
		t.Fatalf("replay delivered: %d packets", n)
	}
	if b.dev.Stats().Replays != 1 {
		t.Errorf("replays = %d", b.dev.Stats().Replays)
	}
}

func TestInnerSourceOutsideAllowedIPsDropped(t *testing.T) {
	w, _, a, b := setupPair(t)
	spoof := ipv4Packet(netip.MustParseAddr("100.64.0.99"), b.addr, 60, 1)
	a.dev.SendTo(b.pub, spoof)
	w.pump(t)
	if n := len(b.delivered()); n != 0 {
		t.Fatalf("spoofed packet delivered")
	}
	ok6 := ipv6Packet(netip.MustParseAddr("fd7a:115c:a1e0::1"), netip.MustParseAddr("fd7a:115c:a1e0::2"), 60)
	a.dev.SendTo(b.pub, ok6)
	w.pump(t)
	if n := len(b.delivered()); n != 0 {
		t.Fatalf("IPv6 packet from a non-allowed source delivered")
	}
	a.dev.SendTo(b.pub, ipv4Packet(a.addr, b.addr, 60, 1))
	w.pump(t)
	if n := len(b.delivered()); n != 1 {
		t.Fatalf("legit packet not delivered")
	}
}

func TestTSMPDelivered(t *testing.T) {
	w, _, a, b := setupPair(t)
	p := ipv4Packet(a.addr, b.addr, 20+33, 0)
	p[9] = 99 // TSMP
	p[20] = 'a'
	a.dev.SendTo(b.pub, p)
	w.pump(t)
	if got := b.delivered(); len(got) != 1 || !bytes.Equal(got[0], p) {
		t.Fatal("TSMP packet not delivered intact")
	}
}

func TestRekeyAfterExpiry(t *testing.T) {
	w, clock, a, b := setupPair(t)
	a.dev.SendTo(b.pub, ipv4Packet(a.addr, b.addr, 60, 1))
	w.pump(t)
	if n := len(w.sentOfType(TypeInitiation)); n != 1 {
		t.Fatalf("initiations = %d", n)
	}

	// Past RekeyAfterTime the initiator still sends with the old keys but
	// starts a new handshake.
	clock.Advance(RekeyAfterTime + time.Second)
	a.dev.SendTo(b.pub, ipv4Packet(a.addr, b.addr, 60, 2))
	w.pump(t)
	if n := len(w.sentOfType(TypeInitiation)); n != 2 {
		t.Fatalf("no rekey after RekeyAfterTime: initiations = %d", n)
	}
	if n := len(b.delivered()); n != 2 {
		t.Fatalf("delivered %d, want 2", n)
	}

	// Past RejectAfterTime nothing old is usable: packets wait for a new
	// session and traffic continues.
	clock.Advance(RejectAfterTime + time.Second)
	for i := range 3 {
		b.dev.SendTo(a.pub, ipv4Packet(b.addr, a.addr, 60, byte(i)))
	}
	w.pump(t)
	if n := len(w.sentOfType(TypeInitiation)); n != 3 {
		t.Fatalf("initiations = %d, want 3", n)
	}
	if n := len(a.delivered()); n != 3 {
		t.Fatalf("a delivered %d after rekey, want 3", n)
	}
	if s := b.dev.Stats(); s.HandshakesCompleted != 3 {
		t.Fatalf("b handshakes = %d", s.HandshakesCompleted)
	}
}

func TestTimersRetransmitKeepaliveAndZero(t *testing.T) {
	w, clock, a, b := setupPair(t)
	w.drop = func(m wireMsg) bool { return messageType(m.data) == TypeInitiation }
	a.dev.SendTo(b.pub, ipv4Packet(a.addr, b.addr, 60, 1))
	w.pump(t)
	clock.Advance(RekeyTimeout + RekeyTimeoutJitterMax)
	a.dev.EvaluateTimers()
	if n := len(w.sentOfType(TypeInitiation)); n != 2 {
		t.Fatalf("initiations after RekeyTimeout = %d, want 2", n)
	}
	w.drop = nil
	w.pump(t)
	if n := len(b.delivered()); n != 1 {
		t.Fatalf("staged packet not delivered after retransmit")
	}

	// b received data: after KeepaliveTimeout without sending, it sends a
	// keepalive.
	before := len(w.sentOfType(TypeTransport))
	clock.Advance(KeepaliveTimeout)
	b.dev.EvaluateTimers()
	sent := w.sentOfType(TypeTransport)
	if len(sent) != before+1 || len(sent[len(sent)-1].data) != KeepaliveSize || sent[len(sent)-1].from != b.pub {
		t.Fatalf("no passive keepalive from b")
	}
	w.pump(t)

	// With no traffic the keys are zeroed and the state released.
	clock.Advance(3 * RejectAfterTime)
	a.dev.EvaluateTimers()
	b.dev.EvaluateTimers()
	if s := a.dev.Stats(); s.ActivePeers != 0 {
		t.Fatalf("a still holds state for %d peers", s.ActivePeers)
	}
	if s, _ := a.dev.PeerStats(b.pub); s.HasSession {
		t.Fatal("session survived zeroing")
	}
	// And a new session comes up on demand.
	a.dev.SendTo(b.pub, ipv4Packet(a.addr, b.addr, 60, 9))
	w.pump(t)
	if n := len(b.delivered()); n != 2 {
		t.Fatalf("no traffic after state release")
	}
}

func TestNewHandshakeWhenUnanswered(t *testing.T) {
	w, clock, a, b := setupPair(t)
	a.dev.SendTo(b.pub, ipv4Packet(a.addr, b.addr, 60, 1))
	w.pump(t)
	w.drop = func(wireMsg) bool { return true }
	a.dev.SendTo(b.pub, ipv4Packet(a.addr, b.addr, 60, 2))
	w.pump(t)
	clock.Advance(KeepaliveTimeout + RekeyTimeout + RekeyTimeoutJitterMax)
	a.dev.EvaluateTimers()
	if n := len(w.sentOfType(TypeInitiation)); n != 2 {
		t.Fatalf("initiations = %d, want a new one after silence", n)
	}
}

func TestGiveUpAfterAttempts(t *testing.T) {
	w, clock, a, b := setupPair(t)
	w.drop = func(wireMsg) bool { return true }
	a.dev.SendTo(b.pub, ipv4Packet(a.addr, b.addr, 60, 1))
	for range 40 {
		clock.Advance(RekeyTimeout + RekeyTimeoutJitterMax)
		a.dev.EvaluateTimers()
	}
	if n := len(w.sentOfType(TypeInitiation)); n != maxHandshakeAttempts+2 {
		t.Fatalf("initiations = %d, want %d", n, maxHandshakeAttempts+2)
	}
}

func TestInitiationReplayAndFlood(t *testing.T) {
	w, clock, a, b := setupPair(t)
	w.drop = func(wireMsg) bool { return true }
	a.dev.SendTo(b.pub, ipv4Packet(a.addr, b.addr, 60, 1))
	w.pump(t)
	init1 := w.sentOfType(TypeInitiation)[0].data
	if !receive(t, b.dev, append([]byte(nil), init1...), nil) {
		t.Fatal("first initiation rejected")
	}
	clock.Advance(time.Second)
	if receive(t, b.dev, append([]byte(nil), init1...), nil) {
		t.Fatal("replayed initiation accepted")
	}
	// A fresh initiation right after the previous one is a flood.
	clock.Advance(RekeyTimeout)
	a.dev.EvaluateTimers() // retransmit
	clock.Advance(10 * time.Millisecond)
	all := w.sentOfType(TypeInitiation)
	init2 := all[len(all)-1].data
	// Accept init2 once time has passed, but a third one 10 ms later is a flood.
	if !receive(t, b.dev, append([]byte(nil), init2...), nil) {
		t.Fatal("second initiation rejected")
	}
	clock.Advance(RekeyTimeout + RekeyTimeoutJitterMax)
	a.dev.EvaluateTimers()
	all = w.sentOfType(TypeInitiation)
	init3 := all[len(all)-1].data
	if bytes.Equal(init3, init2) {
		t.Fatal("no third initiation")
	}
	b.dev.hsMu.Lock()
	b.dev.hsMu.Unlock()
	// Move b's view of the last consumption close to now.
	bp := b.dev.peers[a.pub]
	bp.mu.Lock()
	bp.lastInitConsumed = clock.Now().Add(-10 * time.Millisecond)
	bp.mu.Unlock()
	if receive(t, b.dev, append([]byte(nil), init3...), nil) {
		t.Fatal("initiation within HandshakeInitationRate accepted")
	}
}

func TestUnderLoadCookie(t *testing.T) {
	w := newWire()
	clock := newFakeClock()
	a := w.newNode(t, clock, "100.64.0.1", nil)
	var b *node
	b = w.newNode(t, clock, "100.64.0.2", func(c *Config) {
		c.UnderLoad = func() bool { return true }
		c.SendCookieReply = func(src, msg []byte) error {
			if string(src) != "a-addr" {
				t.Errorf("cookie reply to %q", src)
			}
			w.mu.Lock()
			w.queue = append(w.queue, wireMsg{from: b.pub, to: a.pub, data: append([]byte(nil), msg...)})
			w.mu.Unlock()
			return nil
		}
	})
	connect(a, b)
	// Deliver to b with a source address so cookies bind to it.
	w.mu.Lock()
	w.devs[b.pub] = nil
	w.mu.Unlock()
	pumpTo := func() {
		for range 100 {
			w.mu.Lock()
			if len(w.queue) == 0 {
				w.mu.Unlock()
				return
			}
			m := w.queue[0]
			w.queue = w.queue[1:]
			w.mu.Unlock()
			if m.to == b.pub {
				receive(t, b.dev, m.data, []byte("a-addr"))
			} else {
				receive(t, a.dev, m.data, nil)
			}
		}
	}
	a.dev.SendTo(b.pub, ipv4Packet(a.addr, b.addr, 60, 1))
	pumpTo()
	if b.dev.Stats().CookieRepliesSent != 1 {
		t.Fatalf("cookie replies = %d", b.dev.Stats().CookieRepliesSent)
	}
	if len(b.delivered()) != 0 {
		t.Fatal("handshake without mac2 went through under load")
	}
	// The retransmitted initiation carries mac2 and is accepted.
	clock.Advance(RekeyTimeout + RekeyTimeoutJitterMax)
	a.dev.EvaluateTimers()
	pumpTo()
	if len(b.delivered()) != 1 {
		t.Fatalf("no data after cookie: b delivered %d", len(b.delivered()))
	}
}

func TestUnderLoadDetection(t *testing.T) {
	w := newWire()
	clock := newFakeClock()
	d := w.newNode(t, clock, "100.64.0.1", func(c *Config) { c.HandshakeLoadLimit = 3 }).dev
	d.hsMu.Lock()
	defer d.hsMu.Unlock()
	now := clock.Now()
	for i := range 3 {
		if d.isUnderLoad(now) {
			t.Fatalf("under load after %d messages", i+1)
		}
	}
	if !d.isUnderLoad(now) {
		t.Fatal("not under load past the limit")
	}
	if !d.isUnderLoad(now.Add(500 * time.Millisecond)) {
		t.Fatal("load ended too early")
	}
	if d.isUnderLoad(now.Add(3 * time.Second)) {
		t.Fatal("load never ended")
	}
}

func TestSendPacketRouting(t *testing.T) {
	w := newWire()
	clock := newFakeClock()
	a := w.newNode(t, clock, "100.64.0.1", nil)
	b := w.newNode(t, clock, "100.64.0.2", nil)
	c := w.newNode(t, clock, "100.64.0.3", nil)
	a.dev.SetPeers([]PeerConfig{
		{Key: b.pub, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("100.64.0.2/32"), netip.MustParsePrefix("0.0.0.0/0")}},
		{Key: c.pub, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("100.64.0.3/32"), netip.MustParsePrefix("10.0.0.0/8")}},
	})
	d := a.dev
	for _, tc := range []struct {
		ip   string
		want *node
	}{
		{"100.64.0.2", b}, {"100.64.0.3", c}, {"10.1.2.3", c}, {"8.8.8.8", b},
	} {
		p := d.routes.lookup(netip.MustParseAddr(tc.ip))
		if p == nil || p.key != tc.want.pub {
			t.Errorf("route %s: wrong peer", tc.ip)
		}
	}
	if d.routes.lookup(netip.MustParseAddr("fd7a::1")) != nil {
		t.Error("IPv6 routed without a route")
	}
	if err := d.SendPacket([]byte{0x45, 0}); err != ErrInvalidPacket {
		t.Errorf("short packet: %v", err)
	}
	if err := d.SendPacket(ipv6Packet(a.addr6(), netip.MustParseAddr("fd7a::1"), 40)); err != ErrNoRoute {
		t.Errorf("unroutable: %v", err)
	}
}

func (n *node) addr6() netip.Addr { return netip.MustParseAddr("fd7a:115c:a1e0::1") }

func TestStagedQueueBounded(t *testing.T) {
	w, _, a, b := setupPair(t)
	w.drop = func(wireMsg) bool { return true }
	for i := range maxStaged + 5 {
		a.dev.SendTo(b.pub, ipv4Packet(a.addr, b.addr, 60, byte(i)))
	}
	w.pump(t)
	w.drop = nil
	// Complete the handshake from b's side; a flushes its queue on b's
	// first data.
	b.dev.SendTo(a.pub, ipv4Packet(b.addr, a.addr, 60, 0))
	w.pump(t)
	got := b.delivered()
	if len(got) != maxStaged {
		t.Fatalf("flushed %d packets, want %d", len(got), maxStaged)
	}
	if got[0][20] != ipv4Packet(a.addr, b.addr, 60, 5)[20] {
		t.Error("queue kept the oldest packets, want the newest")
	}
}

func TestSetPeersKeepsSessions(t *testing.T) {
	w, _, a, b := setupPair(t)
	a.dev.SendTo(b.pub, ipv4Packet(a.addr, b.addr, 60, 1))
	w.pump(t)
	// Same peers again, plus an unrelated one: the session survives.
	other := newWire().newNode(t, newFakeClock(), "100.64.0.9", nil)
	a.dev.SetPeers([]PeerConfig{
		{Key: b.pub, AllowedIPs: []netip.Prefix{netip.PrefixFrom(b.addr, 32)}},
		{Key: other.pub, AllowedIPs: []netip.Prefix{netip.PrefixFrom(other.addr, 32)}},
	})
	a.dev.SendTo(b.pub, ipv4Packet(a.addr, b.addr, 60, 2))
	w.pump(t)
	if n := len(w.sentOfType(TypeInitiation)); n != 1 {
		t.Fatalf("session lost on SetPeers: %d initiations", n)
	}
	if s := a.dev.Stats(); s.Peers != 2 || s.ActivePeers != 1 {
		t.Fatalf("stats %+v: the unused peer must hold no state", s)
	}
	// Removing b drops its session; b's messages are no longer accepted.
	a.dev.SetPeers(nil)
	if err := a.dev.SendTo(b.pub, ipv4Packet(a.addr, b.addr, 60, 3)); err != ErrUnknownPeer {
		t.Fatalf("send to removed peer: %v", err)
	}
	b.dev.SendTo(a.pub, ipv4Packet(b.addr, a.addr, 60, 4))
	w.pump(t)
	if len(a.delivered()) != 0 {
		t.Fatal("removed peer's packet delivered")
	}
	if len(a.dev.index) != 0 {
		t.Fatalf("index table holds %d entries after removal", len(a.dev.index))
	}
}

func TestCloseStopsGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	w := newWire()
	clock := newFakeClock()
	var nodes []*node
	for i := range 4 {
		nodes = append(nodes, w.newNode(t, clock, netip.AddrFrom4([4]byte{100, 64, 1, byte(i)}).String(), nil))
	}
	connect(nodes[0], nodes[1])
	nodes[0].dev.SendTo(nodes[1].pub, ipv4Packet(nodes[0].addr, nodes[1].addr, 60, 1))
	w.pump(t)
	for _, n := range nodes {
		if err := n.dev.Close(); err != nil {
			t.Fatal(err)
		}
		n.dev.Close() // idempotent
	}
	if err := nodes[0].dev.SendTo(nodes[1].pub, []byte{0x45}); err != ErrClosed {
		t.Fatalf("send after close: %v", err)
	}
	checkNoGoroutineLeak(t, before)
}

func TestTimerGoroutineRealClock(t *testing.T) {
	// With the real clock the device's own goroutine retransmits.
	w := newWire()
	a := w.newNode(t, newFakeClock(), "100.64.0.1", func(c *Config) { c.Now = nil })
	b := w.newNode(t, newFakeClock(), "100.64.0.2", nil)
	connect(a, b)
	a.dev.SendTo(b.pub, ipv4Packet(a.addr, b.addr, 60, 1))
	p := a.dev.peers[b.pub]
	p.mu.Lock()
	p.st.retransmitAt = time.Now().Add(20 * time.Millisecond)
	p.st.lastSentHandshake = time.Time{}
	p.mu.Unlock()
	a.dev.kickAt(time.Now())
	deadline := time.Now().Add(2 * time.Second)
	for len(w.sentOfType(TypeInitiation)) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("timer goroutine did not retransmit")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestUnsentInitiation: an initiation the transport could not send (no path
// to the peer yet) does not hold the session back for RekeyTimeout.
func TestUnsentInitiation(t *testing.T) {
	for _, viaTimer := range []bool{false, true} {
		w, clock := newWire(), newFakeClock()
		var noPath atomic.Bool
		noPath.Store(true)
		var refused atomic.Int32
		a := w.newNode(t, clock, "100.64.0.1", func(c *Config) {
			send := c.Send
			c.Send = func(to key.NodePublic, msg []byte) error {
				if noPath.Load() {
					refused.Add(1)
					return errors.New("no path to peer yet")
				}
				return send(to, msg)
			}
		})
		b := w.newNode(t, clock, "100.64.0.2", nil)
		connect(a, b)
		a.dev.SendTo(b.pub, ipv4Packet(a.addr, b.addr, 60, 1))
		if refused.Load() != 1 {
			t.Fatalf("transport saw %d sends, want the initiation", refused.Load())
		}
		noPath.Store(false)
		if viaTimer {
			// No more traffic: the retry comes after unsentRetry.
			clock.Advance(unsentRetry)
			a.dev.EvaluateTimers()
		} else {
			// The next packet starts a new handshake at once.
			a.dev.SendTo(b.pub, ipv4Packet(a.addr, b.addr, 60, 2))
		}
		w.pump(t)
		if len(b.delivered()) == 0 {
			t.Fatalf("viaTimer=%v: nothing delivered before RekeyTimeout", viaTimer)
		}
		if n := len(w.sentOfType(TypeInitiation)); n != 1 {
			t.Fatalf("viaTimer=%v: %d initiations on the wire, want 1", viaTimer, n)
		}
	}
}
