package wireguard

import (
	"bytes"
	"testing"

	"github.com/microlink-go/microlink/internal/key"
)

// sinkPair is two devices with a session, whose Send hooks copy the last
// message into a fixed buffer instead of queueing it.
type sinkPair struct {
	w        *wire
	a, b     *node
	capture  bool
	last     []byte
	received int
}

func newSinkPair(tb testing.TB) *sinkPair {
	sp := &sinkPair{w: newWire(), last: make([]byte, 0, bufferSize)}
	clock := newFakeClock()
	hook := func(c *Config) {
		send := c.Send
		c.Send = func(to key.NodePublic, msg []byte) error {
			if sp.capture {
				sp.last = append(sp.last[:0], msg...)
				return nil
			}
			return send(to, msg)
		}
		c.Deliver = func(key.NodePublic, []byte) { sp.received++ }
	}
	sp.a = sp.w.newNode(tb, clock, "100.64.0.1", hook)
	sp.b = sp.w.newNode(tb, clock, "100.64.0.2", hook)
	connect(sp.a, sp.b)
	sp.a.dev.SendTo(sp.b.pub, ipv4Packet(sp.a.addr, sp.b.addr, 60, 0))
	sp.w.pump(tb)
	sp.b.dev.SendTo(sp.a.pub, ipv4Packet(sp.b.addr, sp.a.addr, 60, 0))
	sp.w.pump(tb)
	if sp.received != 2 {
		tb.Fatalf("setup delivered %d", sp.received)
	}
	sp.capture = true
	return sp
}

// messages returns n transport messages from a to b carrying pkt.
func (sp *sinkPair) messages(tb testing.TB, n int, pkt []byte) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		if err := sp.a.dev.SendTo(sp.b.pub, pkt); err != nil {
			tb.Fatal(err)
		}
		out[i] = bytes.Clone(sp.last)
	}
	return out
}

func TestSendZeroAlloc(t *testing.T) {
	sp := newSinkPair(t)
	pkt := ipv4Packet(sp.a.addr, sp.b.addr, 1280, 1)
	allocs := testing.AllocsPerRun(200, func() {
		if err := sp.a.dev.SendTo(sp.b.pub, pkt); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("SendTo allocates %v times per packet", allocs)
	}
	allocs = testing.AllocsPerRun(200, func() {
		if err := sp.a.dev.SendPacket(pkt); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("SendPacket allocates %v times per packet", allocs)
	}
	if len(sp.last) != KeepaliveSize+1280 {
		t.Fatalf("last message %d bytes", len(sp.last))
	}
}

func TestReceiveZeroAlloc(t *testing.T) {
	sp := newSinkPair(t)
	const runs = 200
	msgs := sp.messages(t, runs+1, ipv4Packet(sp.a.addr, sp.b.addr, 1280, 1))
	i := 0
	before := sp.received
	allocs := testing.AllocsPerRun(runs, func() {
		if _, ok := sp.b.dev.Receive(msgs[i]); !ok {
			t.Fatal("receive failed")
		}
		i++
	})
	if allocs != 0 {
		t.Fatalf("Receive allocates %v times per packet", allocs)
	}
	if sp.received-before != runs+1 {
		t.Fatalf("delivered %d of %d", sp.received-before, runs+1)
	}
}

// TestRxBatchZeroAlloc: the messages of a read handled through an RxBatch
// allocate nothing, and each is delivered.
func TestRxBatchZeroAlloc(t *testing.T) {
	sp := newSinkPair(t)
	const runs = 200
	msgs := sp.messages(t, runs+1, ipv4Packet(sp.a.addr, sp.b.addr, 1280, 1))
	rb := sp.b.dev.NewRxBatch()
	i := 0
	before := sp.received
	allocs := testing.AllocsPerRun(runs, func() {
		rb.Add(msgs[i], nil)
		i++
		if i%16 == 0 {
			rb.Flush()
		}
	})
	if allocs != 0 {
		t.Fatalf("RxBatch.Add allocates %v times per packet", allocs)
	}
	if sp.received-before != runs+1 {
		t.Fatalf("delivered %d of %d", sp.received-before, runs+1)
	}
}

func BenchmarkSeal(b *testing.B) {
	sp := newSinkPair(b)
	pkt := ipv4Packet(sp.a.addr, sp.b.addr, 1280, 1)
	b.ReportAllocs()
	b.SetBytes(int64(len(pkt)))
	for b.Loop() {
		sp.a.dev.SendTo(sp.b.pub, pkt)
	}
}

func BenchmarkOpen(b *testing.B) {
	sp := newSinkPair(b)
	pkt := ipv4Packet(sp.a.addr, sp.b.addr, 1280, 1)
	const chunk = 256
	var msgs [][]byte
	b.ReportAllocs()
	b.SetBytes(int64(len(pkt)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%chunk == 0 {
			b.StopTimer()
			msgs = sp.messages(b, chunk, pkt)
			b.StartTimer()
		}
		if _, ok := sp.b.dev.Receive(msgs[i%chunk]); !ok {
			b.Fatal("receive failed")
		}
	}
}

func FuzzReceive(f *testing.F) {
	sp := newSinkPair(f)
	sp.capture = false
	// Seeds: every message of a handshake and some data.
	sp.a.dev.SetPeers(nil)
	connect(sp.a, sp.b)
	sp.a.dev.SendTo(sp.b.pub, ipv4Packet(sp.a.addr, sp.b.addr, 100, 0))
	sp.w.pump(f)
	for _, m := range sp.w.sent {
		f.Add(m.data)
	}
	f.Add(mustHex(f, goldenInitiation))
	f.Add(mustHex(f, goldenResponse))
	f.Add(append([]byte{3, 0, 0, 0}, make([]byte, 60)...))
	f.Add([]byte{4, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		receive(t, sp.b.dev, bytes.Clone(b), nil)
		receive(t, sp.b.dev, bytes.Clone(b), []byte{1, 2, 3})
		receive(t, sp.a.dev, b, nil)
		sp.w.mu.Lock()
		sp.w.queue = sp.w.queue[:0]
		sp.w.sent = sp.w.sent[:0]
		sp.w.mu.Unlock()
	})
}
