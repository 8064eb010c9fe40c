package wireguard

import (
	"net/netip"
	"testing"
	"time"

	"github.com/microlink-go/microlink/internal/key"
)

// restartNode replaces n's device by a new one with the same key, as a
// restarted node has: same identity, no sessions.
func (w *wire) restartNode(t *testing.T, clock *fakeClock, n, peer *node) {
	t.Helper()
	n.dev.Close()
	d, err := NewDevice(Config{
		PrivateKey: n.priv,
		Send: func(to key.NodePublic, msg []byte) error {
			w.mu.Lock()
			m := wireMsg{from: n.pub, to: to, data: append([]byte(nil), msg...)}
			w.queue = append(w.queue, m)
			w.sent = append(w.sent, m)
			w.mu.Unlock()
			return nil
		},
		Deliver: func(_ key.NodePublic, pkt []byte) {
			n.mu.Lock()
			n.got = append(n.got, append([]byte(nil), pkt...))
			n.mu.Unlock()
		},
		Now: clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	d.SetPeers([]PeerConfig{{Key: peer.pub, AllowedIPs: []netip.Prefix{netip.PrefixFrom(peer.addr, peer.addr.BitLen())}}})
	n.dev = d
	w.mu.Lock()
	w.devs[n.pub] = d
	w.mu.Unlock()
}

func established(t *testing.T) (*wire, *fakeClock, *node, *node) {
	t.Helper()
	w, clock, a, b := setupPair(t)
	a.dev.SendTo(b.pub, ipv4Packet(a.addr, b.addr, 60, 1))
	w.pump(t)
	b.dev.SendTo(a.pub, ipv4Packet(b.addr, a.addr, 60, 2))
	w.pump(t)
	if len(a.delivered()) != 1 || len(b.delivered()) != 1 {
		t.Fatalf("no session: delivered a=%d b=%d", len(a.delivered()), len(b.delivered()))
	}
	return w, clock, a, b
}

// TestPeerRestarted: b restarts and loses its keys. Told so, a sends its
// next packet through a new handshake at once instead of into the old
// session, which b's new instance cannot open; no timer is needed.
func TestPeerRestarted(t *testing.T) {
	w, clock, a, b := established(t)
	w.restartNode(t, clock, b, a)

	a.dev.SendTo(b.pub, ipv4Packet(a.addr, b.addr, 60, 3))
	w.pump(t)
	if n := len(b.delivered()); n != 1 {
		t.Fatalf("b got %d packets: the old session should be dead", n)
	}

	a.dev.PeerRestarted(b.pub)
	a.dev.SendTo(b.pub, ipv4Packet(a.addr, b.addr, 60, 4))
	w.pump(t)
	if n := len(b.delivered()); n != 2 {
		t.Fatalf("b got %d packets after PeerRestarted, want 2", n)
	}
	b.dev.SendTo(a.pub, ipv4Packet(b.addr, a.addr, 60, 5))
	w.pump(t)
	if n := len(a.delivered()); n != 2 {
		t.Fatalf("a got %d packets, want 2", n)
	}
}

// TestPeerRestartedAfterNewSession: the restarted peer made a session
// with a before a heard of the restart. That session still opens what b
// sends, and a's own packets go through a new handshake.
func TestPeerRestartedAfterNewSession(t *testing.T) {
	w, clock, a, b := established(t)
	w.restartNode(t, clock, b, a)
	b.dev.SendTo(a.pub, ipv4Packet(b.addr, a.addr, 60, 3))
	w.pump(t)
	if n := len(a.delivered()); n != 2 {
		t.Fatalf("a got %d packets from b's new instance, want 2", n)
	}

	a.dev.PeerRestarted(b.pub)
	b.dev.SendTo(a.pub, ipv4Packet(b.addr, a.addr, 60, 4))
	w.pump(t)
	if n := len(a.delivered()); n != 3 {
		t.Fatalf("a got %d packets on b's session after PeerRestarted, want 3", n)
	}
	inits := len(w.sentOfType(TypeInitiation))
	a.dev.SendTo(b.pub, ipv4Packet(a.addr, b.addr, 60, 5))
	w.pump(t)
	if n := len(b.delivered()); n != 2 {
		t.Fatalf("b got %d packets, want 2", n)
	}
	if n := len(w.sentOfType(TypeInitiation)) - inits; n != 1 {
		t.Errorf("%d initiations for a's packet, want 1", n)
	}
}

// TestRekey: b dropped its session with a without telling (as tailscaled
// does when it learns late that a restarted). a's packets vanish until
// the handshake that Rekey schedules makes a new session.
func TestRekey(t *testing.T) {
	w, clock, a, b := established(t)
	b.dev.UpdatePeers(nil, []key.NodePublic{a.pub})
	connect(a, b)

	a.dev.SendTo(b.pub, ipv4Packet(a.addr, b.addr, 60, 3))
	w.pump(t)
	if n := len(b.delivered()); n != 1 {
		t.Fatalf("b got %d packets on a session it dropped", n)
	}
	inits := len(w.sentOfType(TypeInitiation))
	a.dev.Rekey(b.pub)
	w.pump(t)
	if n := len(w.sentOfType(TypeInitiation)) - inits; n != 0 {
		t.Fatalf("%d initiations at once, want them rekeyWait later", n)
	}
	clock.Advance(rekeyWait)
	a.dev.EvaluateTimers()
	w.pump(t)
	if n := len(w.sentOfType(TypeInitiation)) - inits; n != 1 {
		t.Fatalf("%d initiations after rekeyWait, want 1", n)
	}
	a.dev.SendTo(b.pub, ipv4Packet(a.addr, b.addr, 60, 4))
	w.pump(t)
	if n := len(b.delivered()); n != 2 {
		t.Fatalf("b got %d packets after Rekey, want 2", n)
	}
}

// TestRekeyKeepsNewerSession: a session or handshake that began after
// Rekey was called is left alone; one of ours in progress that began
// before is started again, even though RekeyTimeout has not passed.
func TestRekeyKeepsNewerSession(t *testing.T) {
	t.Run("session after", func(t *testing.T) {
		w, clock, a, b := setupPair(t)
		a.dev.SendTo(b.pub, ipv4Packet(a.addr, b.addr, 60, 1)) // initiation in flight
		a.dev.Rekey(b.pub)
		clock.Advance(time.Millisecond)
		w.pump(t)                             // the first handshake completes after the call
		clock.Advance(100 * time.Millisecond) // past the initiation flood limit
		a.dev.PeerRestarted(b.pub)
		a.dev.SendTo(b.pub, ipv4Packet(a.addr, b.addr, 60, 2))
		w.pump(t) // a second one, begun after the call
		inits := len(w.sentOfType(TypeInitiation))
		clock.Advance(rekeyWait)
		a.dev.EvaluateTimers()
		w.pump(t)
		if n := len(w.sentOfType(TypeInitiation)) - inits; n != 0 {
			t.Fatalf("%d initiations to replace a session begun after Rekey", n)
		}
		if len(b.delivered()) != 2 {
			t.Fatalf("b got %d packets, want 2", len(b.delivered()))
		}
	})
	t.Run("handshake before", func(t *testing.T) {
		w, clock, a, b := setupPair(t)
		w.drop = func(m wireMsg) bool { return messageType(m.data) == TypeResponse }
		a.dev.SendTo(b.pub, ipv4Packet(a.addr, b.addr, 60, 1))
		w.pump(t) // its response is lost
		a.dev.Rekey(b.pub)
		w.drop = nil
		clock.Advance(rekeyWait)
		a.dev.EvaluateTimers()
		w.pump(t)
		if n := len(w.sentOfType(TypeInitiation)); n != 2 {
			t.Fatalf("%d initiations, want the lost one and one rekeyWait later", n)
		}
		if len(b.delivered()) != 1 {
			t.Fatalf("b got %d packets, want the queued one", len(b.delivered()))
		}
	})
}

// TestRekeyIdle: without a session or a handshake, Rekey and
// PeerRestarted send nothing.
func TestRekeyIdle(t *testing.T) {
	w, clock, a, b := setupPair(t)
	a.dev.Rekey(b.pub)
	a.dev.PeerRestarted(b.pub)
	clock.Advance(rekeyWait)
	a.dev.EvaluateTimers()
	w.pump(t)
	if n := len(w.sentOfType(TypeInitiation)); n != 0 {
		t.Fatalf("%d initiations to an idle peer", n)
	}
}
