package microlink

import (
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/microlink-go/microlink/internal/key"
	"github.com/microlink-go/microlink/internal/tunnel"
	"github.com/microlink-go/microlink/internal/wireguard"
)

// relayed is one packet handed to a fakeDERP.
type relayed struct {
	region int
	dst    key.NodePublic
	pkt    []byte
}

// fakeDERP records what magicsock sends through DERP.
type fakeDERP struct {
	mu   sync.Mutex
	sent []relayed
}

func (f *fakeDERP) Send(region int, dst key.NodePublic, pkt []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sent = append(f.sent, relayed{region, dst, append([]byte(nil), pkt...)})
	return nil
}
func (f *fakeDERP) SetHome(int)  {}
func (f *fakeDERP) Close() error { return nil }

// await waits up to 5 s for n packets and takes them.
func (f *fakeDERP) await(t *testing.T, n int) []relayed {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		f.mu.Lock()
		got := len(f.sent)
		f.mu.Unlock()
		if got >= n {
			return f.take()
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d packets relayed, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// awaitStats polls d's WireGuard stats until cond holds, for up to 5 s,
// since handshakes are handled on the device's own goroutine.
func awaitStats(t *testing.T, d *dataPlane, what string, cond func(wireguard.Stats) bool) wireguard.Stats {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s := d.wg.Stats()
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: stats %+v", what, s)
		}
		time.Sleep(time.Millisecond)
	}
}

func (f *fakeDERP) take() []relayed {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.sent
	f.sent = nil
	return s
}

// handshakePeer is a WireGuard device of a remote peer whose handshake
// initiations the test delivers by hand.
type handshakePeer struct {
	dev *wireguard.Device

	mu  sync.Mutex // the device's timer goroutine reads the clock too
	now time.Time
	out [][]byte // messages the device sent
}

func (h *handshakePeer) clock() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.now
}

func newHandshakePeer(t *testing.T, to key.NodePublic) *handshakePeer {
	t.Helper()
	h := &handshakePeer{now: time.Now()}
	var err error
	h.dev, err = wireguard.NewDevice(wireguard.Config{
		PrivateKey: key.NewPrivate(),
		Send: func(_ key.NodePublic, msg []byte) error {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.out = append(h.out, append([]byte(nil), msg...))
			return nil
		},
		Deliver: func(key.NodePublic, []byte) {},
		Now:     h.clock,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.dev.Close() })
	h.dev.SetPeers([]wireguard.PeerConfig{{Key: to, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("100.64.0.1/32")}}})
	return h
}

// initiation makes the device start a handshake (or retransmit one after
// the rekey timeout) and returns the initiation it sent.
func (h *handshakePeer) initiation(t *testing.T, retry bool) []byte {
	t.Helper()
	h.mu.Lock()
	h.out = nil
	if retry {
		h.now = h.now.Add(wireguard.RekeyTimeout + wireguard.RekeyTimeoutJitterMax)
	}
	h.mu.Unlock()
	if retry {
		h.dev.EvaluateTimers()
	} else {
		pkt := make([]byte, 20)
		pkt[0] = 0x45
		pkt[3] = 20
		copy(pkt[12:16], []byte{100, 64, 0, 2})
		copy(pkt[16:20], []byte{100, 64, 0, 1})
		h.dev.SendPacket(pkt)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, m := range h.out {
		if m[0] == wireguard.TypeInitiation {
			return m
		}
	}
	t.Fatalf("no handshake initiation sent (retry %v)", retry)
	return nil
}

// TestCookieRepliesGoBack: under load, a handshake that lacks a cookie is
// answered with a cookie reply the way it came: over DERP to the sender's
// node key in the region it came through, or over UDP to its address. The
// reply is valid for the sender, and its retried handshake is accepted.
func TestCookieRepliesGoBack(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	stack := tunnel.New(tunnel.Config{Output: func([]byte) error { return nil }, Logger: logger})
	defer stack.Close()
	relay := &fakeDERP{}
	ourKey := key.NewPrivate()
	d, err := newDataPlane(dataPlaneConfig{Stack: stack, NodeKey: ourKey, DiscoKey: key.NewPrivate(), Port: 0, Logger: logger,
		derp: relay, underLoad: func() bool { return true }})
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()

	t.Run("derp", func(t *testing.T) {
		peer := newHandshakePeer(t, key.NodePublic(ourKey.Public()))
		d.wg.SetPeers([]wireguard.PeerConfig{{Key: peer.dev.PublicKey(), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("100.64.0.2/32")}}})
		d.ms.ReceiveDERP(901, peer.dev.PublicKey(), peer.initiation(t, false))
		sent := relay.await(t, 1)
		if len(sent) != 1 {
			t.Fatalf("%d packets relayed, want one cookie reply", len(sent))
		}
		r := sent[0]
		if r.region != 901 || r.dst != peer.dev.PublicKey() || len(r.pkt) != wireguard.CookieReplySize || r.pkt[0] != wireguard.TypeCookieReply {
			t.Fatalf("relayed to region %d, %v: %d bytes of type %d", r.region, r.dst, len(r.pkt), r.pkt[0])
		}
		if _, ok := peer.dev.Receive(r.pkt); !ok {
			t.Fatal("the peer rejected the cookie reply")
		}
		before := d.wg.Stats()
		d.ms.ReceiveDERP(901, peer.dev.PublicKey(), peer.initiation(t, true))
		after := awaitStats(t, d, "retried handshake not accepted", func(s wireguard.Stats) bool {
			return s.HandshakesCompleted == before.HandshakesCompleted+1
		})
		if after.CookieRepliesSent != before.CookieRepliesSent || after.ActivePeers != 1 {
			t.Fatalf("retried handshake not accepted: stats before %+v, after %+v", before, after)
		}
		// Another sender through the same relay gets a cookie of its own:
		// the first one's cookie does not make its handshake pass.
		other := newHandshakePeer(t, key.NodePublic(ourKey.Public()))
		init := peer.initiation(t, true) // carries the first peer's cookie
		d.ms.ReceiveDERP(901, other.dev.PublicKey(), init)
		awaitStats(t, d, "a cookie bound to one sender was accepted from another", func(s wireguard.Stats) bool {
			return s.CookieRepliesSent == after.CookieRepliesSent+1 && s.HandshakesCompleted == after.HandshakesCompleted
		})
		relay.await(t, 1)
	})

	t.Run("udp", func(t *testing.T) {
		uc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer uc.Close()
		peer := newHandshakePeer(t, key.NodePublic(ourKey.Public()))
		d.receiveWireGuard(peer.initiation(t, false), uc.LocalAddr().(*net.UDPAddr).AddrPort())
		uc.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 1500)
		n, err := uc.Read(buf)
		if err != nil {
			t.Fatalf("no cookie reply over UDP: %v", err)
		}
		if n != wireguard.CookieReplySize || buf[0] != wireguard.TypeCookieReply {
			t.Fatalf("UDP reply of %d bytes, type %d", n, buf[0])
		}
		if _, ok := peer.dev.Receive(buf[:n]); !ok {
			t.Fatal("the peer rejected the cookie reply")
		}
		if sent := relay.take(); len(sent) != 0 {
			t.Fatalf("a UDP sender's cookie reply went through DERP: %+v", sent)
		}
	})

	if err := d.sendCookieReply([]byte{srcDERP, 1}, make([]byte, wireguard.CookieReplySize)); err == nil {
		t.Error("cookie reply to a malformed source sent")
	}
}

// TestReceiveWireGuardAllocs: packing a message's source, over UDP or
// DERP, costs no allocation on the receive path.
func TestReceiveWireGuardAllocs(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	stack := tunnel.New(tunnel.Config{Output: func([]byte) error { return nil }, Logger: logger})
	defer stack.Close()
	d, err := newDataPlane(dataPlaneConfig{Stack: stack, NodeKey: key.NewPrivate(), DiscoKey: key.NewPrivate(), Logger: logger, derp: &fakeDERP{}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	// A transport message for no known session: parsed, then dropped.
	msg := make([]byte, 32+16)
	msg[0] = wireguard.TypeTransport
	src := netip.MustParseAddrPort("127.0.0.1:41641")
	from := key.NodePublic(key.NewPrivate().Public())
	if n := testing.AllocsPerRun(200, func() {
		d.receiveWireGuard(msg, src)
		d.receiveWireGuardDERP(msg, 900, from)
	}); n != 0 {
		t.Fatalf("%v allocations per receive", n)
	}
}
