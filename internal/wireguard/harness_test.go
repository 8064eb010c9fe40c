package wireguard

import (
	"encoding/binary"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/microlink-go/microlink/internal/key"
)

// fakeClock is a settable clock for Config.Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// wire is an in-memory network: Send hooks queue copies of messages and
// pump delivers them in order.
type wire struct {
	mu    sync.Mutex
	queue []wireMsg
	devs  map[key.NodePublic]*Device
	// drop, if set, decides to lose a message.
	drop func(m wireMsg) bool
	sent []wireMsg // every message ever queued
}

type wireMsg struct {
	from, to key.NodePublic
	data     []byte
}

// node is one device on a wire with what it delivered.
type node struct {
	dev  *Device
	priv key.Private
	pub  key.NodePublic
	addr netip.Addr

	mu  sync.Mutex
	got [][]byte
}

func (n *node) delivered() [][]byte {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([][]byte(nil), n.got...)
}

func newWire() *wire { return &wire{devs: map[key.NodePublic]*Device{}} }

func (w *wire) newNode(t testing.TB, clock *fakeClock, addr string, mutate func(*Config)) *node {
	t.Helper()
	n := &node{priv: key.NewPrivate(), addr: netip.MustParseAddr(addr)}
	n.pub = n.priv.NodePublic()
	cfg := Config{
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
	}
	if mutate != nil {
		mutate(&cfg)
	}
	d, err := NewDevice(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	n.dev = d
	w.mu.Lock()
	w.devs[n.pub] = d
	w.mu.Unlock()
	return n
}

// pump delivers queued messages until the wire is idle and returns how
// many were delivered.
func (w *wire) pump(t testing.TB) int {
	t.Helper()
	count := 0
	for range 1000 {
		w.mu.Lock()
		if len(w.queue) == 0 {
			w.mu.Unlock()
			return count
		}
		m := w.queue[0]
		w.queue = w.queue[1:]
		drop := w.drop != nil && w.drop(m)
		dev := w.devs[m.to]
		w.mu.Unlock()
		if drop || dev == nil {
			continue
		}
		dev.Receive(m.data)
		settle(t, dev)
		count++
	}
	t.Fatal("wire never went idle")
	return count
}

// sentOfType returns the messages of type typ sent so far.
func (w *wire) sentOfType(typ byte) []wireMsg {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []wireMsg
	for _, m := range w.sent {
		if messageType(m.data) == typ {
			out = append(out, m)
		}
	}
	return out
}

// connect makes a and b peers of each other, each allowed its own /32.
func connect(a, b *node) {
	a.dev.SetPeers([]PeerConfig{{Key: b.pub, AllowedIPs: []netip.Prefix{netip.PrefixFrom(b.addr, b.addr.BitLen())}}})
	b.dev.SetPeers([]PeerConfig{{Key: a.pub, AllowedIPs: []netip.Prefix{netip.PrefixFrom(a.addr, a.addr.BitLen())}}})
}

// ipv4Packet builds an IPv4/UDP-ish packet of total size n from src to dst.
func ipv4Packet(src, dst netip.Addr, n int, fill byte) []byte {
	p := make([]byte, n)
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(n))
	p[8] = 64
	p[9] = 17
	s, d := src.As4(), dst.As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	for i := 20; i < n; i++ {
		p[i] = fill + byte(i)
	}
	return p
}

func ipv6Packet(src, dst netip.Addr, n int) []byte {
	p := make([]byte, n)
	p[0] = 0x60
	binary.BigEndian.PutUint16(p[4:], uint16(n-40))
	p[6] = 17
	p[7] = 64
	s, d := src.As16(), dst.As16()
	copy(p[8:], s[:])
	copy(p[24:], d[:])
	return p
}

// checkNoGoroutineLeak fails if the goroutine count does not return to
// before within a second.
func checkNoGoroutineLeak(t *testing.T, before int) {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= before {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("goroutines: before %d, after %d\n%s", before, n, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// settle waits until d's handshake goroutine has handled every message
// queued so far.
func settle(tb testing.TB, d *Device) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for d.hsPending.Load() != 0 {
		if time.Now().After(deadline) {
			tb.Fatal("handshake queue never drained")
		}
		time.Sleep(20 * time.Microsecond)
	}
}

// receive hands msg from src to d as a transport does, waits until a
// handshake message has been handled, and reports whether msg was
// accepted: for handshakes, whether the device counted no drop.
func receive(tb testing.TB, d *Device, msg, src []byte) bool {
	tb.Helper()
	before := d.stats.drops.Load()
	_, ok := d.ReceiveFrom(msg, src)
	switch messageType(msg) {
	case TypeInitiation, TypeResponse:
		settle(tb, d)
		return d.stats.drops.Load() == before
	}
	return ok
}
