package tcp

import (
	"bytes"
	"encoding/binary"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/microlink-go/microlink/internal/packet"
)

// scoreboardConn returns a connection that has sent n segments of 100
// bytes from base, all unacknowledged, at times 1, 2, ...
func scoreboardConn(base uint32, n int) *Conn {
	s := New(Config{Output: func([]byte) error { return nil }})
	c := s.newConn(connID{})
	c.mss, c.sackOK = 100, true
	c.iss, c.sndUna, c.sndNxt, c.bufSeq = base-1, base, base, base
	for i := range n {
		c.sent.push(sentSeg{seq: c.sndNxt, len: 100, xmit: int64(i + 1)})
		c.sndNxt += 100
	}
	return c
}

// TestScoreboard: SACK blocks mark the segments they cover whole, not
// those covered in part; blocks beyond what was sent and empty ones are
// ignored; a first block below the acknowledgement is a D-SACK; the
// counters behind pipe follow every change, also across the wrap of
// sequence numbers.
func TestScoreboard(t *testing.T) {
	for _, base := range []uint32{1000, 0xffffff00} {
		c := scoreboardConn(base, 100)
		r := func(a, b uint32) seqRange { return seqRange{base + a, base + b} }
		ack := func(ackNo uint32, blocks ...seqRange) ackEvent {
			var sg segment
			sg.ack = ackNo
			sg.nsacks = copy(sg.sacks[:], blocks)
			var ev ackEvent
			c.processSACKs(&sg, &ev, 1000)
			if seqGT(ackNo, c.sndUna) {
				c.ackUpTo(ackNo, &ev, 1000)
			}
			return ev
		}
		sacked := func() (out []int) {
			for i := range c.sent.n {
				if c.sent.at(i).flags&segSACKed != 0 {
					out = append(out, int(c.sent.at(i).seq-base)/100)
				}
			}
			return out
		}

		ev := ack(base, r(500, 600), r(200, 300))
		ack(base, r(300, 350), r(580, 700))  // a part of 3; 6 whole
		ack(base, r(9000, 10001), r(50, 50)) // beyond sndNxt, empty: ignored
		if got, want := sacked(), []int{2, 5, 6}; !slices.Equal(got, want) || !ev.sacked {
			t.Fatalf("base %#x: SACKed segments %v, want %v", base, got, want)
		}
		if c.sackedOut != 300 || c.sackedSegs != 3 || c.pipe() != 10000-300 {
			t.Fatalf("base %#x: sackedOut %d, segments %d, pipe %d", base, c.sackedOut, c.sackedSegs, c.pipe())
		}
		if ev := ack(base, seqRange{base - 100, base}); !ev.dsack {
			t.Fatalf("base %#x: a block below the ACK is not taken for a D-SACK", base)
		}
		if ev := ack(base, r(500, 550), r(500, 700)); !ev.dsack {
			t.Fatalf("base %#x: a first block inside the second is not taken for a D-SACK", base)
		}

		// Lost and resent segments count out of and back into the pipe.
		c.markLost(3)
		c.markLost(2) // SACKed: not lost
		if c.lostOut != 100 || c.pipe() != 10000-400 {
			t.Fatalf("base %#x: lostOut %d, pipe %d", base, c.lostOut, c.pipe())
		}
		if i, ok := c.nextLost(); !ok || i != 3 {
			t.Fatalf("base %#x: nextLost = %d, %v; want 3", base, i, ok)
		}
		c.setFlag(c.sent.at(3), segRetrans)
		if _, ok := c.nextLost(); ok || c.pipe() != 10000-300 {
			t.Fatalf("base %#x: after the resend: nextLost %v, pipe %d", base, ok, c.pipe())
		}
		c.markLost(3) // the retransmission is lost too: due again
		if i, ok := c.nextLost(); !ok || i != 3 || c.retransOut != 0 {
			t.Fatalf("base %#x: lost retransmission: nextLost %d %v, retransOut %d", base, i, ok, c.retransOut)
		}

		// A cumulative ACK in the middle of a segment trims it.
		ack(base + 250)
		if c.sent.n != 98 || c.sent.at(0).seq != base+250 || c.sackedOut != 250 || c.lostOut != 100 || c.sndUna != base+250 {
			t.Fatalf("base %#x: after ACK +250: %d segments from +%d, sackedOut %d, lostOut %d", base, c.sent.n, c.sent.at(0).seq-base, c.sackedOut, c.lostOut)
		}
		ack(base + 10000)
		if c.sent.n != 0 || c.sackedOut != 0 || c.lostOut != 0 || c.retransOut != 0 || c.sackedSegs != 0 || c.pipe() != 0 {
			t.Fatalf("base %#x: all acknowledged: %d segments, counters %d %d %d %d", base, c.sent.n, c.sackedOut, c.lostOut, c.retransOut, c.sackedSegs)
		}
	}
}

// TestSACKRecoveryInOneRoundTrip: four segments of one window are lost.
// With the peer's SACK blocks, the sender resends all four before the
// acknowledgement of the first resent one can have come back, where
// NewReno alone would resend one per round trip. No timeout fires and
// the data arrives intact.
func TestSACKRecoveryInOneRoundTrip(t *testing.T) {
	for _, iss := range []uint32{0x10, 0x7fffff00, 0x80000010, 0xffffffff - 30*1240} {
		t.Run(strconv.FormatUint(uint64(iss), 16), func(t *testing.T) { testSACKRecovery(t, iss) })
	}
}

// testSACKRecovery runs TestSACKRecoveryInOneRoundTrip with the sender's
// initial sequence number iss: in either half of the sequence space (the
// first fast retransmit once depended on it), or wrapping around among
// the holes.
func testSACKRecovery(t *testing.T, iss uint32) {
	const (
		rtt  = 60 * time.Millisecond
		mss  = 1240 // MTU 1280, IPv4
		size = 200 * mss
	)
	holeAt := []int{30, 33, 36, 39} // segment numbers
	var (
		start    uint32
		holes    = map[uint32]int{} // hole sequence number -> transmissions
		firstEnd uint32
		resent   int // holes resent before firstEnd was acknowledged
		acked    bool
		armed    bool
		lineMu   sync.Mutex
	)
	drop := func(pkt []byte) bool {
		lineMu.Lock()
		defer lineMu.Unlock()
		var p packet.Parsed
		if !armed || p.Decode(pkt) != nil || p.Proto != packet.ProtoTCP {
			return false
		}
		seg := p.Transport()
		seq, ack := binary.BigEndian.Uint32(seg[4:8]), binary.BigEndian.Uint32(seg[8:12])
		data := len(seg) > int(seg[12]>>4)*4
		switch {
		case p.Src == addrA4 && data:
			sent, ok := holes[seq]
			if !ok {
				return false
			}
			holes[seq] = sent + 1
			if sent == 0 {
				return true // the first transmission is lost
			}
			if !acked {
				resent++
			}
		case p.Src == addrB4 && seqGEQ(ack, firstEnd):
			acked = true
		}
		return false
	}
	a, b := delayLinePair(t, scriptConfig(), rtt/2, drop)
	a.iss = func() uint32 { return iss }
	c, s := connect(t, a, b, addrA4, addrB4, 80)
	c.mu.Lock()
	start = c.iss + 1
	c.mu.Unlock()
	lineMu.Lock()
	for _, k := range holeAt {
		holes[start+uint32(k*mss)] = 0
	}
	firstEnd = start + uint32(holeAt[0]*mss+mss)
	armed = true
	lineMu.Unlock()

	want := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	go func() {
		c.Write(want)
		c.CloseWrite()
	}()
	s.SetReadDeadline(time.Now().Add(20 * time.Second))
	got, err := io.ReadAll(s)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("received %d bytes (intact: %v), err %v", len(got), bytes.Equal(got, want), err)
	}
	lineMu.Lock()
	defer lineMu.Unlock()
	for seq, n := range holes {
		if n != 2 {
			t.Errorf("segment at +%d sent %d times, want 2", seq-start, n)
		}
	}
	if resent != len(holeAt) {
		t.Errorf("%d of %d holes resent before the first resent one was acknowledged, want all", resent, len(holeAt))
	}
	if st := a.Stats(); st.Timeouts != 0 {
		t.Errorf("%d retransmission timeouts", st.Timeouts)
	}
}

// TestSACKRecoveryConcurrent runs lossy transfers on three connections
// at once, each both ways, for the race detector and for data integrity
// with SACK recovery under random loss, duplication and reordering.
func TestSACKRecoveryConcurrent(t *testing.T) {
	a, b, _ := pair(t, fastConfig(), impairments{loss: 0.08, dup: 0.02, delay: 2 * time.Millisecond, jitter: 3 * time.Millisecond})
	t.Run("group", func(t *testing.T) {
		for port := range uint16(3) {
			t.Run(strconv.Itoa(int(port)), func(t *testing.T) {
				t.Parallel()
				c, s := connect(t, a, b, addrA4, addrB4, 90+port)
				size := 512 << 10
				if testing.Short() { // under qemu
					size = 128 << 10
				}
				transfer(t, c, s, size)
				c.Close()
				s.Close()
			})
		}
	})
	if st := a.Stats(); st.Retransmits == 0 {
		t.Fatal("no retransmissions under loss")
	}
}

// delayLinePair returns stacks A and B joined by a line that delivers
// every packet delay after it was sent, in the order sent, unless drop
// says it is lost.
func delayLinePair(t *testing.T, cfg Config, delay time.Duration, drop func(pkt []byte) bool) (a, b *Stack) {
	t.Helper()
	d := &delayLine{delay: delay, drop: drop, stacks: map[netip.Addr]*Stack{}, done: make(chan struct{})}
	d.cond = sync.NewCond(&d.mu)
	cfg.Output = d.output
	a, b = New(cfg), New(cfg)
	d.stacks[addrA4], d.stacks[addrB4] = a, b
	go d.run()
	t.Cleanup(func() { a.Close(); b.Close(); d.close() })
	return a, b
}

type delayLine struct {
	delay  time.Duration
	drop   func([]byte) bool
	stacks map[netip.Addr]*Stack

	mu     sync.Mutex
	cond   *sync.Cond
	queue  []timedPacket
	closed bool
	done   chan struct{}
}

type timedPacket struct {
	at  time.Time
	pkt []byte
}

func (d *delayLine) output(pkt []byte) error {
	if d.drop(pkt) {
		return nil
	}
	d.mu.Lock()
	d.queue = append(d.queue, timedPacket{time.Now().Add(d.delay), append([]byte(nil), pkt...)})
	d.cond.Signal()
	d.mu.Unlock()
	return nil
}

func (d *delayLine) run() {
	defer close(d.done)
	d.mu.Lock()
	for {
		for len(d.queue) == 0 && !d.closed {
			d.cond.Wait()
		}
		if d.closed {
			d.mu.Unlock()
			return
		}
		p := d.queue[0]
		d.queue = d.queue[1:]
		d.mu.Unlock()
		time.Sleep(time.Until(p.at))
		var parsed packet.Parsed
		if parsed.Decode(p.pkt) == nil {
			if s := d.stacks[parsed.Dst]; s != nil {
				s.Inbound(parsed.Src, parsed.Dst, parsed.Transport())
			}
		}
		d.mu.Lock()
	}
}

func (d *delayLine) close() {
	d.mu.Lock()
	d.closed = true
	d.cond.Signal()
	d.mu.Unlock()
	<-d.done
}
