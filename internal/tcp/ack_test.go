package tcp

import (
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestAckFollowsReads: once more than a few segments wait for the
// application, the receiver no longer acknowledges every second segment
// but leaves the ACK to the next read (or to the delayed-ACK timer if none
// comes), as Linux does; once the reader keeps up, every second segment is
// acknowledged again, and the sender's window grows in slow start without
// a loss, a timeout or a recovery.
func TestAckFollowsReads(t *testing.T) {
	var acks atomic.Int64 // bare ACKs from B
	// When A's data took the line, first and last: the delayed-ACK timer
	// may fire once more for each delayedAck the arrivals spread over.
	var mu sync.Mutex
	var first, last time.Time
	a, b, _ := scriptPair(t, scriptConfig(), scriptRTT/2, func(p scriptedPacket) (bool, time.Duration) {
		if p.src == addrB4 && p.data == 0 && p.flags&(flagSYN|flagFIN|flagRST) == 0 {
			acks.Add(1)
		}
		if p.src == addrA4 && p.data > 0 {
			mu.Lock()
			if first.IsZero() {
				first = p.at
			}
			last = p.at
			mu.Unlock()
		}
		return false, 0
	})
	c, s := connect(t, a, b, addrA4, addrB4, 80)
	waitFor(t, "the handshake's last ACK", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.unacked == 0
	})

	// Sixteen segments arrive together while nobody reads: every second
	// one is acknowledged while at most ackLag wait, then one ACK from the
	// delayed-ACK timer, not eight in all.
	s.mu.Lock()
	s.grow(&s.rcvLimit, 1<<20, 1<<20)
	s.mu.Unlock()
	const segs = 16
	acks.Store(0)
	mu.Lock()
	first, last = time.Time{}, time.Time{}
	mu.Unlock()
	if _, err := c.Write(make([]byte, segs*scriptMSS)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the data acknowledged", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.sndUna == c.sndNxt
	})
	time.Sleep(3 * delayedAck)
	mu.Lock()
	spread := last.Sub(first)
	mu.Unlock()
	// Two bursts, or a sender slowed down (as under emulation), may see
	// the timer fire between them.
	timers := int64(spread/delayedAck) + 1
	if n, want := acks.Load(), int64(ackLag/2+1); n < want || n > want+timers {
		t.Errorf("%d ACKs for %d unread segments sent over %v, want %d to %d", n, segs, spread, want, want+timers)
	}

	// The read opens the window: the receiver tells the sender.
	acks.Store(0)
	buf := make([]byte, segs*scriptMSS)
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(s, buf); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the window update", func() bool { return acks.Load() == 1 })

	// A prompt reader: a transfer in slow start, acknowledged often
	// enough that the window grows to carry it within a few round trips.
	before := snapshot(c)
	acks.Store(0)
	const size = 2 << 20
	d := oneWay(t, c, s, size)
	after := snapshot(c)
	st := a.Stats()
	n := acks.Load()
	t.Logf("%d bytes in %v, %d ACKs, cwnd %d -> %d, %+v", size, d, n, before.cwnd, after.cwnd, st)
	if after.cwnd < 8*before.cwnd || after.ssthresh < 1<<30 {
		t.Errorf("the window did not grow in slow start: %+v before, %+v after", before, after)
	}
	if st.Timeouts != 0 || st.Recoveries != 0 {
		t.Errorf("timeouts %d, recoveries %d; want none", st.Timeouts, st.Recoveries)
	}
	if segsSent := int64(size / scriptMSS); n < segsSent/32 {
		t.Errorf("%d ACKs for %d segments: far fewer than the reads", n, segsSent)
	}
}
