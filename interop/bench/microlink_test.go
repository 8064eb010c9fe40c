package bench

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microlink-go/microlink/internal/key"
	"github.com/microlink-go/microlink/internal/wireguard"
)

// mlPair is two microlink WireGuard devices joined in memory. Until the
// session is up, messages are queued and pumped; after that, route
// decides what a sent message does.
type mlPair struct {
	a, b       *wireguard.Device
	aKey, bKey key.NodePublic

	mu    sync.Mutex
	queue []queued

	// route handles a message from a to b once set; nil queues it.
	route atomic.Pointer[func(msg []byte)]

	delivered atomic.Uint64
	bad       atomic.Uint64
}

type queued struct {
	to   *wireguard.Device
	data []byte
}

// scratch buffers stand in for the kernel's copy of a datagram between
// two sockets.
var scratch = sync.Pool{New: func() any { b := make([]byte, 2048); return &b }}

func newMLPair(tb testing.TB) *mlPair {
	tb.Helper()
	p := &mlPair{}
	privA, privB := key.NewPrivate(), key.NewPrivate()
	p.aKey, p.bKey = privA.NodePublic(), privB.NodePublic()
	var err error
	p.a, err = wireguard.NewDevice(wireguard.Config{
		PrivateKey: privA,
		Send: func(_ key.NodePublic, msg []byte) error {
			if r := p.route.Load(); r != nil {
				(*r)(msg)
				return nil
			}
			p.enqueue(p.b, msg)
			return nil
		},
		Deliver: func(key.NodePublic, []byte) {},
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.a.Close() })
	p.b, err = wireguard.NewDevice(wireguard.Config{
		PrivateKey: privB,
		Send: func(_ key.NodePublic, msg []byte) error {
			p.enqueue(p.a, msg)
			return nil
		},
		Deliver: func(_ key.NodePublic, pkt []byte) {
			if len(pkt) != packetSize {
				p.bad.Add(1)
			}
			p.delivered.Add(1)
		},
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.b.Close() })
	p.a.SetPeers([]wireguard.PeerConfig{{Key: p.bKey, AllowedIPs: []netip.Prefix{netip.PrefixFrom(addrB, 32)}}})
	p.b.SetPeers([]wireguard.PeerConfig{{Key: p.aKey, AllowedIPs: []netip.Prefix{netip.PrefixFrom(addrA, 32)}}})

	// The first packet starts the handshake; pumping completes it and
	// delivers the packet, which also confirms b's keypair.
	if err := p.a.SendTo(p.bKey, udpPacket(addrA, addrB, packetSize)); err != nil {
		tb.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for p.delivered.Load() == 0 {
		if !p.pumpOne() && time.Now().After(deadline) {
			tb.Fatal("microlink handshake did not complete")
		}
	}
	for p.pumpOne() {
	}
	p.delivered.Store(0)
	return p
}

func (p *mlPair) enqueue(to *wireguard.Device, msg []byte) {
	p.mu.Lock()
	p.queue = append(p.queue, queued{to, append([]byte(nil), msg...)})
	p.mu.Unlock()
}

func (p *mlPair) pumpOne() bool {
	p.mu.Lock()
	if len(p.queue) == 0 {
		p.mu.Unlock()
		return false
	}
	m := p.queue[0]
	p.queue = p.queue[1:]
	p.mu.Unlock()
	m.to.Receive(m.data)
	return true
}

// setRoute makes every message from a to b go through f.
func (p *mlPair) setRoute(f func(msg []byte)) { p.route.Store(&f) }

// deliverToB copies msg as a socket would and hands it to b.
func (p *mlPair) deliverToB(msg []byte) {
	bp := scratch.Get().(*[]byte)
	n := copy(*bp, msg)
	p.b.Receive((*bp)[:n])
	scratch.Put(bp)
}

func (p *mlPair) checkDelivered(tb testing.TB, want uint64) {
	tb.Helper()
	if got := p.delivered.Load(); got != want {
		tb.Fatalf("delivered %d packets, want %d", got, want)
	}
	if bad := p.bad.Load(); bad != 0 {
		tb.Fatalf("%d packets delivered with the wrong size", bad)
	}
}

// BenchmarkMicrolink measures the microlink WireGuard device with
// 1280-byte packets: encryption alone, decryption alone, and the whole
// path from one device's SendTo to the other's Deliver, in one goroutine
// and in GOMAXPROCS goroutines.
func BenchmarkMicrolink(b *testing.B) {
	pkt := udpPacket(addrA, addrB, packetSize)

	b.Run("seal", func(b *testing.B) {
		p := newMLPair(b)
		var sent atomic.Uint64
		p.setRoute(func([]byte) { sent.Add(1) })
		b.SetBytes(packetSize)
		b.ReportAllocs()
		defer countAllocs(b)()
		b.ResetTimer()
		for range b.N {
			if err := p.a.SendTo(p.bKey, pkt); err != nil {
				b.Fatal(err)
			}
		}
		if sent.Load() != uint64(b.N) {
			b.Fatalf("sent %d, want %d", sent.Load(), b.N)
		}
	})

	b.Run("open", func(b *testing.B) {
		p := newMLPair(b)
		const batch = 1024
		msgs := make([][]byte, batch)
		for i := range msgs {
			msgs[i] = make([]byte, 0, 2048)
		}
		i := 0
		p.setRoute(func(msg []byte) { msgs[i] = append(msgs[i][:0], msg...); i++ })
		b.SetBytes(packetSize)
		b.ReportAllocs()
		defer countAllocs(b)()
		b.ResetTimer()
		for done := 0; done < b.N; {
			b.StopTimer()
			n := min(batch, b.N-done)
			i = 0
			for range n {
				if err := p.a.SendTo(p.bKey, pkt); err != nil {
					b.Fatal(err)
				}
			}
			b.StartTimer()
			for _, m := range msgs[:n] {
				p.b.Receive(m)
			}
			done += n
		}
		b.StopTimer()
		p.checkDelivered(b, uint64(b.N))
	})

	b.Run("e2e", func(b *testing.B) {
		p := newMLPair(b)
		p.setRoute(p.deliverToB)
		b.SetBytes(packetSize)
		b.ReportAllocs()
		defer countAllocs(b)()
		b.ResetTimer()
		for range b.N {
			if err := p.a.SendTo(p.bKey, pkt); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		p.checkDelivered(b, uint64(b.N))
	})

	b.Run("e2e-parallel", func(b *testing.B) {
		p := newMLPair(b)
		p.setRoute(p.deliverToB)
		b.SetBytes(packetSize)
		b.ReportAllocs()
		defer countAllocs(b)()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := p.a.SendTo(p.bKey, pkt); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.StopTimer()
		// Parallel senders may reorder messages beyond what the replay
		// window accepts; count those as losses, not errors.
		got := p.delivered.Load()
		if got < uint64(b.N)*99/100 {
			b.Fatalf("delivered %d of %d packets", got, b.N)
		}
		b.ReportMetric(100*float64(uint64(b.N)-got)/float64(b.N), "%lost")
	})
}

// TestMicrolinkPacketAllocs checks the goal of no allocation per packet
// on the whole in-memory path, encryption through delivery.
func TestMicrolinkPacketAllocs(t *testing.T) {
	p := newMLPair(t)
	p.setRoute(p.deliverToB)
	pkt := udpPacket(addrA, addrB, packetSize)
	allocs := testing.AllocsPerRun(1000, func() {
		if err := p.a.SendTo(p.bKey, pkt); err != nil {
			t.Fatal(err)
		}
	})
	p.checkDelivered(t, 1001)
	if allocs != 0 {
		t.Errorf("%.2f allocations per packet, want 0", allocs)
	}
}
