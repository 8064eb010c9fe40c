package tcp

import (
	"bytes"
	"io"
	"sync/atomic"
	"testing"
	"time"
)

// Loss patterns scripted on a line with a 40 ms round trip, checking the
// sender's congestion state, not only the data. The minimum RTO is far
// above the round trip, so that a retransmission timeout shows a fault of
// loss recovery rather than a slow machine.

const (
	scriptRTT = 40 * time.Millisecond
	scriptMSS = 1240
)

func scriptConfig() Config {
	return Config{MinRTO: 400 * time.Millisecond, MaxRTO: 3 * time.Second, TimeWait: 100 * time.Millisecond, FinWait2Timeout: time.Second}
}

// segNo returns the number of the data segment at seq, counting from 0 at
// the first byte after iss.
func segNo(iss, seq uint32) int { return int(seq-iss-1) / scriptMSS }

// congestion is a snapshot of a sender's congestion state.
type congestion struct {
	cwnd, ssthresh, priorCwnd int
	rto                       time.Duration
	backoff                   int
	state                     int
}

func snapshot(c *Conn) congestion {
	c.mu.Lock()
	defer c.mu.Unlock()
	return congestion{c.cwnd, c.ssthresh, c.recov.priorCwnd, c.rto, c.backoff, c.recov.state}
}

// oneWay sends size bytes from c to s, which reads them all, and checks
// them.
func oneWay(t *testing.T, c, s *Conn, size int) time.Duration {
	t.Helper()
	want := make([]byte, size)
	for i := range want {
		want[i] = byte(i * 7 / 3)
	}
	start := time.Now()
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(want)
		errc <- err
	}()
	s.SetReadDeadline(time.Now().Add(30 * time.Second))
	got := make([]byte, size)
	if _, err := io.ReadFull(s, got); err != nil {
		t.Fatalf("read: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("data corrupted")
	}
	d := time.Since(start)
	waitFor(t, "the last ACK", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.sndUna == c.sndNxt
	})
	return d
}

// scripted runs a transfer of size bytes from A to B over a line that
// applies drop to A's data segments (by segment number and transmission)
// and returns A's connection and stats.
func scripted(t *testing.T, cfg Config, size int, drop func(seg, sent int) bool) (*Conn, Stats) {
	return scriptedWindow(t, cfg, size, 0, drop)
}

// scriptedWindow is scripted with the receiver's buffer grown to rcvBuf
// from the start, if not 0.
func scriptedWindow(t *testing.T, cfg Config, size, rcvBuf int, drop func(seg, sent int) bool) (*Conn, Stats) {
	t.Helper()
	var iss atomic.Uint32
	a, b, _ := scriptPair(t, cfg, scriptRTT/2, func(p scriptedPacket) (bool, time.Duration) {
		if p.src != addrA4 || p.data == 0 || iss.Load() == 0 {
			return false, 0
		}
		return drop(segNo(iss.Load(), p.seq), p.sent), 0
	})
	c, s := connect(t, a, b, addrA4, addrB4, 80)
	if rcvBuf != 0 {
		s.mu.Lock()
		s.grow(&s.rcvLimit, rcvBuf, rcvBuf)
		s.mu.Unlock()
	}
	iss.Store(c.iss)
	oneWay(t, c, s, size)
	return c, a.Stats()
}

// TestSingleLoss: one lost segment costs one retransmission and one
// recovery; CUBIC cuts the window to 0.7 of what it was; no timer fires.
func TestSingleLoss(t *testing.T) {
	c, st := scripted(t, scriptConfig(), 1<<20, func(seg, sent int) bool { return seg == 100 && sent == 1 })
	cs := snapshot(c)
	t.Logf("%+v %+v", st, cs)
	if st.Retransmits != 1 || st.Recoveries != 1 || st.Timeouts != 0 {
		t.Errorf("retransmits %d, recoveries %d, timeouts %d; want 1, 1, 0", st.Retransmits, st.Recoveries, st.Timeouts)
	}
	if want := int(float64(cs.priorCwnd) * cubicBeta); cs.ssthresh != want {
		t.Errorf("ssthresh %d after a loss at cwnd %d, want %d", cs.ssthresh, cs.priorCwnd, want)
	}
	if cs.cwnd < cs.ssthresh || cs.state != open || cs.backoff != 0 || cs.rto != 400*time.Millisecond {
		t.Errorf("after recovery: %+v; want cwnd >= ssthresh, open, no backoff, RTO at its minimum", cs)
	}
}

// TestSingleLossNewReno: NewReno halves the flight.
func TestSingleLossNewReno(t *testing.T) {
	cfg := scriptConfig()
	cfg.CongestionControl = "newreno"
	c, st := scripted(t, cfg, 1<<20, func(seg, sent int) bool { return seg == 100 && sent == 1 })
	cs := snapshot(c)
	if st.Retransmits != 1 || st.Recoveries != 1 || st.Timeouts != 0 {
		t.Errorf("retransmits %d, recoveries %d, timeouts %d; want 1, 1, 0", st.Retransmits, st.Recoveries, st.Timeouts)
	}
	// Half the flight, which is at most the window.
	if cs.ssthresh > cs.priorCwnd/2 || cs.ssthresh < 2*scriptMSS {
		t.Errorf("ssthresh %d after a loss at cwnd %d, want at most half", cs.ssthresh, cs.priorCwnd)
	}
}

// TestLostRetransmission: the retransmission of a lost segment is lost
// too. RACK finds it a round trip later from the data sent after it, so
// the third copy goes out without a timeout, within the same recovery,
// which cuts the window once. (The receiver's window is large, so that
// data goes on flowing past the hole.)
func TestLostRetransmission(t *testing.T) {
	c, st := scriptedWindow(t, scriptConfig(), 1<<20, 4<<20, func(seg, sent int) bool { return seg == 100 && sent <= 2 })
	cs := snapshot(c)
	t.Logf("%+v %+v", st, cs)
	if st.Retransmits != 2 || st.Recoveries != 1 || st.Timeouts != 0 {
		t.Errorf("retransmits %d, recoveries %d, timeouts %d; want 2, 1, 0", st.Retransmits, st.Recoveries, st.Timeouts)
	}
	if want := int(float64(cs.priorCwnd) * cubicBeta); cs.ssthresh != want {
		t.Errorf("ssthresh %d after a loss at cwnd %d, want %d: one cut", cs.ssthresh, cs.priorCwnd, want)
	}
}

// TestTailLoss: the last two segments of a flight are lost, so nothing
// after them can be SACKed. A tail loss probe resends the last one after
// about two round trips, its SACK shows the other lost, and recovery
// repairs it, long before a retransmission timeout.
func TestTailLoss(t *testing.T) {
	const size = 200 * scriptMSS
	c, st := scripted(t, scriptConfig(), size, func(seg, sent int) bool { return seg >= 198 && sent == 1 })
	cs := snapshot(c)
	t.Logf("%+v %+v", st, cs)
	if st.LossProbes != 1 || st.Timeouts != 0 || st.Retransmits != 2 {
		t.Errorf("probes %d, timeouts %d, retransmits %d; want 1, 0, 2", st.LossProbes, st.Timeouts, st.Retransmits)
	}
	if cs.ssthresh >= 1<<30 {
		t.Errorf("ssthresh %d: the window was not cut for the losses the probe revealed", cs.ssthresh)
	}
}

// TestZeroWindowStall: the reader stops for many retransmission timeouts.
// The sender probes the closed window, and neither those probes nor the
// stall count as loss: the window and ssthresh are as before, and the
// transfer completes once the reader reads.
func TestZeroWindowStall(t *testing.T) {
	a, b, _ := scriptPair(t, scriptConfig(), scriptRTT/2, func(scriptedPacket) (bool, time.Duration) { return false, 0 })
	c, s := connect(t, a, b, addrA4, addrB4, 80)
	const size = 1 << 20
	want := bytes.Repeat([]byte("stall"), size/5)
	go c.Write(want)
	waitFor(t, "the sender to see the window closed", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.sndWnd == 0 && c.sndUna == c.sndNxt
	})
	before := snapshot(c)
	time.Sleep(2 * time.Second) // five minimum RTOs
	during := snapshot(c)
	c.mu.Lock()
	probes := c.probes
	c.mu.Unlock()
	got := make([]byte, len(want))
	s.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.ReadFull(s, got); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read after the stall: %v", err)
	}
	st := a.Stats()
	t.Logf("before %+v, during %+v, %d probes, %+v", before, during, probes, st)
	if probes == 0 {
		t.Error("no zero-window probes")
	}
	if during.cwnd != before.cwnd || during.ssthresh != before.ssthresh || during.ssthresh < 1<<30 {
		t.Errorf("the stall changed the window: %+v before, %+v during", before, during)
	}
	if st.Timeouts != 0 || st.Recoveries != 0 {
		t.Errorf("timeouts %d, recoveries %d; want none", st.Timeouts, st.Recoveries)
	}
}

// TestReordering: two segments arrive a few milliseconds late. The first
// time, three later segments are SACKed before it comes, so it is taken
// for lost (as Linux would) and resent; the peer's D-SACK shows the
// retransmission was needless, and the recovery is undone. Having seen
// reordering, RACK then waits a quarter of the minimum RTT before taking
// a segment for lost, so the second late segment is not resent.
func TestReordering(t *testing.T) {
	var iss atomic.Uint32
	a, b, _ := scriptPair(t, scriptConfig(), scriptRTT/2, func(p scriptedPacket) (bool, time.Duration) {
		if p.src != addrA4 || p.data == 0 || iss.Load() == 0 || p.sent != 1 {
			return false, 0
		}
		if n := segNo(iss.Load(), p.seq); n == 100 || n == 400 {
			return false, 4 * time.Millisecond
		}
		return false, 0
	})
	c, s := connect(t, a, b, addrA4, addrB4, 80)
	iss.Store(c.iss)
	oneWay(t, c, s, 1<<20)
	cs := snapshot(c)
	st := a.Stats()
	c.mu.Lock()
	reordering := c.rack.reordering
	c.mu.Unlock()
	t.Logf("%+v %+v", st, cs)
	if st.Timeouts != 0 || st.Retransmits > 1 || st.Undos != st.Recoveries {
		t.Errorf("timeouts %d, retransmits %d, recoveries %d, undone %d; want none, at most one, all undone", st.Timeouts, st.Retransmits, st.Recoveries, st.Undos)
	}
	if !reordering || cs.ssthresh < 1<<30 {
		t.Errorf("reordering seen %v, ssthresh %d: want seen, and ssthresh as before", reordering, cs.ssthresh)
	}
}

// TestTimeoutKeepsScoreboard: a segment is lost, then everything A sends
// for 700 ms, so recovery cannot repair it and the retransmission timer
// fires: the window drops to one segment and ssthresh is cut, once. The
// segments the peer SACKed before the timeout are not sent again.
func TestTimeoutKeepsScoreboard(t *testing.T) {
	var (
		iss      atomic.Uint32
		blackout atomic.Int64 // unix nanoseconds it ends; 0: not started
		sentOnce [400]atomic.Int32
	)
	a, b, _ := scriptPair(t, scriptConfig(), scriptRTT/2, func(p scriptedPacket) (bool, time.Duration) {
		if p.src != addrA4 || p.data == 0 || iss.Load() == 0 {
			return false, 0
		}
		n := segNo(iss.Load(), p.seq)
		if n < len(sentOnce) {
			sentOnce[n].Add(1)
		}
		switch end := blackout.Load(); {
		case n == 100 && p.sent == 1:
			return true, 0
		case n == 150 && p.sent == 1 && end == 0:
			// SACKs of 101 to 150 are on their way: now go dark.
			blackout.Store(time.Now().Add(700 * time.Millisecond).UnixNano())
			return false, 0
		case end != 0 && time.Now().UnixNano() < end && n > 150:
			return true, 0
		case end != 0 && time.Now().UnixNano() < end && n == 100:
			return true, 0
		}
		return false, 0
	})
	c, s := connect(t, a, b, addrA4, addrB4, 80)
	iss.Store(c.iss)
	oneWay(t, c, s, 1<<20)
	st := a.Stats()
	cs := snapshot(c)
	t.Logf("%+v %+v", st, cs)
	if st.Timeouts == 0 {
		t.Fatal("no retransmission timeout")
	}
	for n := 101; n <= 150; n++ {
		if k := sentOnce[n].Load(); k != 1 {
			t.Errorf("segment %d, SACKed before the timeout, sent %d times", n, k)
		}
	}
	if want := int(float64(cs.priorCwnd) * cubicBeta); cs.ssthresh != want {
		t.Errorf("ssthresh %d after losses at cwnd %d, want %d: one cut", cs.ssthresh, cs.priorCwnd, want)
	}
}

// TestSpuriousTimeoutUndone: the path stalls for longer than the
// retransmission timeout and then delivers everything it held, in order,
// as a link that pauses does. The timer fires and resends the first
// segment; the first ACKs after the stall show that segments sent once
// only arrived, so the rest are not resent (as F-RTO would have it), and
// the D-SACK of the one retransmission undoes the timeout: the window and
// ssthresh return to what they were.
func TestSpuriousTimeoutUndone(t *testing.T) {
	var (
		iss      atomic.Uint32
		stallEnd atomic.Pointer[time.Time]
	)
	a, b, _ := scriptPair(t, scriptConfig(), scriptRTT/2, func(p scriptedPacket) (bool, time.Duration) {
		if iss.Load() == 0 {
			return false, 0
		}
		if p.src == addrA4 && p.data > 0 && p.sent == 1 && segNo(iss.Load(), p.seq) == 300 {
			end := p.at.Add(900 * time.Millisecond)
			stallEnd.CompareAndSwap(nil, &end)
		}
		if end := stallEnd.Load(); end != nil && p.at.Before(*end) {
			// Held until the stall ends, then sent on in order.
			return false, end.Sub(p.at)
		}
		return false, 0
	})
	c, s := connect(t, a, b, addrA4, addrB4, 80)
	iss.Store(c.iss)
	oneWay(t, c, s, 1<<20)
	st := a.Stats()
	cs := snapshot(c)
	c.mu.Lock()
	prior := c.recov.priorSsthresh
	c.mu.Unlock()
	t.Logf("%+v %+v", st, cs)
	if st.Timeouts == 0 {
		t.Fatal("no retransmission timeout: the stall was too short to test anything")
	}
	if st.Undos == 0 {
		t.Fatalf("the spurious timeout was not undone: %+v", st)
	}
	if st.Retransmits > 2*st.Timeouts {
		t.Errorf("%d segments resent for %d timeouts: the segments that arrived after the stall were resent too", st.Retransmits, st.Timeouts)
	}
	if cs.ssthresh < prior || cs.state != open {
		t.Errorf("after the undo: %+v, ssthresh before the timeout %d", cs, prior)
	}
}
