package bench

import (
	"crypto/ecdh"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
)

// memDatagram is one datagram in flight between two memBinds.
type memDatagram struct {
	b [2048]byte
	n int
}

// memLink is the shared state of two memBinds: a fixed set of datagram
// buffers and one queue per direction. A full queue blocks the sender
// instead of dropping, so every benchmark packet arrives.
type memLink struct {
	free chan *memDatagram
}

func newMemLink() *memLink {
	l := &memLink{free: make(chan *memDatagram, 4096)}
	for range cap(l.free) {
		l.free <- new(memDatagram)
	}
	return l
}

// memBind is a conn.Bind whose only peer is the other memBind of its
// pair. Each datagram is copied once on the way, as a socket pair would.
type memBind struct {
	link  *memLink
	batch int
	rx    chan *memDatagram
	peer  *memBind

	mu     sync.Mutex
	closed chan struct{}
}

// memEndpoint is the peer's address; there is only one.
type memEndpoint struct{}

var memEndpointBytes = []byte{127, 0, 0, 1, 0, 1}

func (memEndpoint) ClearSrc()           {}
func (memEndpoint) SrcToString() string { return "" }
func (memEndpoint) DstToString() string { return "127.0.0.1:1" }
func (memEndpoint) DstToBytes() []byte  { return memEndpointBytes }
func (memEndpoint) DstIP() netip.Addr   { return netip.AddrFrom4([4]byte{127, 0, 0, 1}) }
func (memEndpoint) SrcIP() netip.Addr   { return netip.Addr{} }

func newMemBinds(batch int) (*memBind, *memBind) {
	l := newMemLink()
	a := &memBind{link: l, batch: batch, rx: make(chan *memDatagram, 2048)}
	b := &memBind{link: l, batch: batch, rx: make(chan *memDatagram, 2048)}
	a.peer, b.peer = b, a
	return a, b
}

func (m *memBind) Open(uint16) ([]conn.ReceiveFunc, uint16, error) {
	m.mu.Lock()
	closed := make(chan struct{})
	m.closed = closed
	m.mu.Unlock()
	recv := func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		var d *memDatagram
		select {
		case d = <-m.rx:
		case <-closed:
			return 0, net.ErrClosed
		}
		n := 0
		for {
			sizes[n] = copy(bufs[n], d.b[:d.n])
			eps[n] = memEndpoint{}
			m.link.free <- d
			n++
			if n == len(bufs) {
				return n, nil
			}
			select {
			case d = <-m.rx:
			default:
				return n, nil
			}
		}
	}
	return []conn.ReceiveFunc{recv}, 1, nil
}

func (m *memBind) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed != nil {
		select {
		case <-m.closed:
		default:
			close(m.closed)
		}
	}
	return nil
}

func (m *memBind) SetMark(uint32) error { return nil }
func (m *memBind) BatchSize() int       { return m.batch }

func (m *memBind) ParseEndpoint(string) (conn.Endpoint, error) { return memEndpoint{}, nil }

func (m *memBind) Send(bufs [][]byte, _ conn.Endpoint) error {
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	for _, b := range bufs {
		var d *memDatagram
		select {
		case d = <-m.link.free:
		case <-closed:
			return net.ErrClosed
		}
		d.n = copy(d.b[:], b)
		select {
		case m.peer.rx <- d:
		case <-closed:
			m.link.free <- d
			return net.ErrClosed
		}
	}
	return nil
}

// genTUN is a tun.Device that reads a fixed packet as many times as it
// is told to and counts the packets written to it.
type genTUN struct {
	pkt    []byte
	batch  int
	quota  atomic.Int64
	wake   chan struct{}
	closed chan struct{}
	once   sync.Once
	events chan tun.Event

	written atomic.Int64
	bad     atomic.Int64
	target  atomic.Int64
	reached chan struct{}
}

func newGenTUN(pkt []byte, batch int) *genTUN {
	return &genTUN{
		pkt:     pkt,
		batch:   batch,
		wake:    make(chan struct{}, 1),
		closed:  make(chan struct{}),
		events:  make(chan tun.Event),
		reached: make(chan struct{}, 1),
	}
}

// produce makes n more packets available to Read.
func (t *genTUN) produce(n int) {
	t.quota.Add(int64(n))
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// expect arranges for reached to be signalled once n packets in total
// have been written.
func (t *genTUN) expect(n int64) { t.target.Store(n) }

func (t *genTUN) File() *os.File { return nil }

func (t *genTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	for {
		q := t.quota.Load()
		if q > 0 {
			k := min(q, int64(len(bufs)))
			if !t.quota.CompareAndSwap(q, q-k) {
				continue
			}
			for i := range k {
				sizes[i] = copy(bufs[i][offset:], t.pkt)
			}
			return int(k), nil
		}
		select {
		case <-t.wake:
		case <-t.closed:
			return 0, os.ErrClosed
		}
	}
}

func (t *genTUN) Write(bufs [][]byte, offset int) (int, error) {
	for _, b := range bufs {
		if len(b)-offset != len(t.pkt) {
			t.bad.Add(1)
		}
	}
	n := t.written.Add(int64(len(bufs)))
	if target := t.target.Load(); target > 0 && n >= target {
		select {
		case t.reached <- struct{}{}:
		default:
		}
	}
	return len(bufs), nil
}

func (t *genTUN) MTU() (int, error)        { return 1420, nil }
func (t *genTUN) Name() (string, error)    { return "gen0", nil }
func (t *genTUN) Events() <-chan tun.Event { return t.events }
func (t *genTUN) BatchSize() int           { return t.batch }
func (t *genTUN) Close() error             { t.once.Do(func() { close(t.closed) }); return nil }
func (t *genTUN) waitReached(d time.Duration) bool {
	select {
	case <-t.reached:
		return true
	case <-time.After(d):
		return false
	}
}

// wgPair is two wireguard-go devices joined by memBinds; a's TUN
// generates packets for b, b's TUN counts them.
type wgPair struct {
	a, b       *device.Device
	tunA, tunB *genTUN
}

func newWGPair(tb testing.TB, batch int) *wgPair {
	tb.Helper()
	privA, privB := newX25519(tb), newX25519(tb)
	pkt := udpPacket(addrA, addrB, packetSize)
	p := &wgPair{tunA: newGenTUN(pkt, batch), tunB: newGenTUN(pkt, batch)}
	bindA, bindB := newMemBinds(batch)
	logger := device.NewLogger(device.LogLevelSilent, "")
	p.a = device.NewDevice(p.tunA, bindA, logger)
	p.b = device.NewDevice(p.tunB, bindB, logger)
	tb.Cleanup(func() {
		p.a.Close()
		p.b.Close()
	})
	cfg := func(priv, peer *ecdh.PrivateKey, allowed netip.Addr) string {
		return fmt.Sprintf("private_key=%s\nlisten_port=1\npublic_key=%s\nallowed_ip=%s/32\nendpoint=127.0.0.1:1\n",
			hex.EncodeToString(priv.Bytes()), hex.EncodeToString(peer.PublicKey().Bytes()), allowed)
	}
	if err := p.a.IpcSet(cfg(privA, privB, addrB)); err != nil {
		tb.Fatal(err)
	}
	if err := p.b.IpcSet(cfg(privB, privA, addrA)); err != nil {
		tb.Fatal(err)
	}
	if err := p.a.Up(); err != nil {
		tb.Fatal(err)
	}
	if err := p.b.Up(); err != nil {
		tb.Fatal(err)
	}
	// One packet through completes the handshake.
	p.send(tb, 1)
	return p
}

// send pushes n packets into a and waits until b has written them all.
func (p *wgPair) send(tb testing.TB, n int) {
	tb.Helper()
	want := p.tunB.written.Load() + int64(n)
	p.tunB.expect(want)
	p.tunA.produce(n)
	if !p.tunB.waitReached(30 * time.Second) {
		tb.Fatalf("wireguard-go delivered %d of %d packets", p.tunB.written.Load(), want)
	}
	if bad := p.tunB.bad.Load(); bad != 0 {
		tb.Fatalf("%d packets delivered with the wrong size", bad)
	}
}

func newX25519(tb testing.TB) *ecdh.PrivateKey {
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// BenchmarkWireGuardGo measures golang.zx2c4.com/wireguard with
// 1280-byte packets from one device's TUN to the other's, through its
// own pipeline of reader, encryption, sender, receiver and decryption
// goroutines, with one packet per read and with batches of 32.
func BenchmarkWireGuardGo(b *testing.B) {
	for _, batch := range []int{1, 32} {
		b.Run(fmt.Sprintf("e2e-batch=%d", batch), func(b *testing.B) {
			p := newWGPair(b, batch)
			b.SetBytes(packetSize)
			b.ReportAllocs()
			defer countAllocs(b)()
			b.ResetTimer()
			p.send(b, b.N)
		})
	}
}
