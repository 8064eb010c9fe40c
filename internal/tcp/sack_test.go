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

// TestScoreboard: SACKed ranges are kept sorted and merged, clamped to
// what was sent and not yet acknowledged, bounded, and pruned by the
// cumulative acknowledgement, also across the wrap of sequence numbers.
func TestScoreboard(t *testing.T) {
	for _, base := range []uint32{1000, 0xffffff00} {
		c := &Conn{sndUna: base, sndMax: base + 10000, mss: 100}
		r := func(a, b uint32) seqRange { return seqRange{base + a, base + b} }
		note := func(blocks ...seqRange) {
			var sg segment
			sg.nsacks = copy(sg.sacks[:], blocks)
			c.noteSACKs(&sg)
		}
		board := func() []seqRange { return slices.Clone(c.sacked[:c.nsacked]) }

		note(r(500, 600), r(200, 300))
		note(r(300, 350), r(580, 700))        // touches one, overlaps the other
		note(r(9000, 10001), r(50, 50))       // beyond sndMax, empty: ignored
		note(seqRange{base - 100, base + 20}) // clamped to sndUna
		if got, want := board(), []seqRange{r(0, 20), r(200, 350), r(500, 700)}; !slices.Equal(got, want) {
			t.Fatalf("base %#x: board %v, want %v", base, got, want)
		}
		for _, tc := range []struct {
			from    uint32
			seq     uint32
			n       int
			present bool
		}{
			{0, 20, 100, true},   // the hole after the first range, one MSS
			{120, 120, 80, true}, // the rest of it
			{200, 350, 100, true},
			{450, 450, 50, true},
			{500, 0, 0, false}, // above the highest SACKed byte: not lost
		} {
			seq, n, ok := c.nextHole(base + tc.from)
			if ok != tc.present || ok && (seq != base+tc.seq || n != tc.n) {
				t.Errorf("base %#x: nextHole(+%d) = +%d, %d, %v; want +%d, %d, %v", base, tc.from, seq-base, n, ok, tc.seq, tc.n, tc.present)
			}
		}
		c.sndUna = base + 250
		c.pruneSACKed()
		if got, want := board(), []seqRange{r(250, 350), r(500, 700)}; !slices.Equal(got, want) {
			t.Fatalf("base %#x: after ACK: %v, want %v", base, got, want)
		}
		// Full: a new low range pushes out the highest.
		for i := range uint32(maxScoreboard) {
			note(r(1000+100*i, 1050+100*i))
		}
		note(r(400, 450))
		got := board()
		if len(got) != maxScoreboard || got[0] != r(250, 350) || got[1] != r(400, 450) || got[maxScoreboard-1] != r(1400, 1450) {
			t.Fatalf("base %#x: full board %v", base, got)
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
		rtt  = 20 * time.Millisecond
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
	a, b := delayLinePair(t, fastConfig(), rtt/2, drop)
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
