package tcp

import (
	"testing"
	"time"
)

// ccConn returns a connection in congestion avoidance with a window of
// cwnd segments of 1000 bytes.
func ccConn(reno bool, cwnd int) *Conn {
	cfg := Config{Output: func([]byte) error { return nil }}
	if reno {
		cfg.CongestionControl = "newreno"
	}
	c := New(cfg).newConn(connID{})
	c.mss, c.cwnd, c.ssthresh, c.srtt = 1000, cwnd*1000, 5*1000, 100*time.Millisecond
	c.hs.done = true
	return c
}

// TestByteCounting: congestion avoidance grows the window by the bytes
// acknowledged (RFC 3465), not by the ACKs: a peer that acknowledges
// every second segment grows it as fast as one that acknowledges each.
func TestByteCounting(t *testing.T) {
	for _, reno := range []bool{true, false} {
		grow := func(perACK int) int {
			c := ccConn(reno, 10)
			now := int64(0)
			for range 20 { // about two round trips of ACKs
				for acked := 0; acked < c.cwnd; acked += perACK * c.mss {
					now += int64(c.srtt) / int64(c.cwnd/(perACK*c.mss))
					c.ccAck(perACK*c.mss, c.srtt, now)
				}
			}
			return c.cwnd
		}
		every, second := grow(1), grow(2)
		t.Logf("reno %v: window after 20 windows of ACKs: %d acknowledging each segment, %d every second", reno, every, second)
		if d := every - second; d > every/20 || d < -every/20 {
			t.Errorf("reno %v: %d with an ACK per segment, %d with one per two", reno, every, second)
		}
		if reno && (every < 29000 || every > 31000) {
			t.Errorf("NewReno grew from 10 to %d segments in 20 round trips, want about 30", every/1000)
		}
	}
}

// TestRestartAfterIdle: a connection idle for less than the
// non-validated period keeps its window (RFC 7661); each five idle
// minutes halve it, down to the initial window at most.
func TestRestartAfterIdle(t *testing.T) {
	c := ccConn(false, 100)
	c.lastSend = int64(time.Hour)
	c.restartAfterIdle(c.lastSend + int64(time.Minute))
	if c.cwnd != 100000 {
		t.Fatalf("window %d after a minute idle, want 100000", c.cwnd)
	}
	c.restartAfterIdle(c.lastSend + int64(11*time.Minute))
	if c.cwnd != 25000 || c.ssthresh != 75000 {
		t.Fatalf("window %d, ssthresh %d after 11 idle minutes, want 25000, 75000", c.cwnd, c.ssthresh)
	}
	c.restartAfterIdle(c.lastSend + int64(time.Hour))
	if c.cwnd != initialWindow(c.mss) {
		t.Fatalf("window %d after an idle hour, want the initial %d", c.cwnd, initialWindow(c.mss))
	}
}

// TestPacingChunks: a sender held back by pacing is released a chunk at a
// time, paceMinChunk segments at low rates and a millisecond's worth at high ones,
// so the timer fires once per chunk, and the rate stays the pacing rate.
func TestPacingChunks(t *testing.T) {
	for _, tc := range []struct {
		cwnd     int // segments
		perFire  float64
		interval time.Duration // one segment's share of the round trip
	}{
		{cwnd: 10, perFire: paceMinChunk, interval: 100 * time.Millisecond / 12},
		{cwnd: 1000, perFire: 12, interval: 100 * time.Millisecond / 1200},
	} {
		c := ccConn(false, tc.cwnd)
		start := int64(time.Second)
		now, sent, fires := start, 0, 0
		for sent < 2000 {
			for c.paceWait(now) == 0 {
				c.pace(c.mss, now)
				sent++
			}
			at := c.paceWait(now)
			if at <= now {
				t.Fatalf("cwnd %d: pacing timer at %d, not after now %d", tc.cwnd, at, now)
			}
			now = at
			fires++
		}
		if got := float64(sent) / float64(fires); got < tc.perFire*0.9 || got > tc.perFire*1.1+1 {
			t.Errorf("cwnd %d: %.1f segments per pacing timer, want about %.0f", tc.cwnd, got, tc.perFire)
		}
		took, want := time.Duration(now-start), time.Duration(sent)*tc.interval
		if d := took - want; d > want/50 || d < -want/50 {
			t.Errorf("cwnd %d: %d segments paced over %v, want %v", tc.cwnd, sent, took, want)
		}
	}
}

// TestPacing: a window sent at once goes out over about SRTT/1.2 in
// congestion avoidance, SRTT/2 in slow start, after a first chunk of a
// millisecond's worth or paceMinChunk segments.
func TestPacing(t *testing.T) {
	const segs = 100 // the window, sent at once
	for _, ss := range []bool{false, true} {
		c := ccConn(false, segs)
		if ss {
			c.ssthresh = 1 << 30
		}
		now := int64(time.Second)
		for range segs {
			c.pace(c.mss, now)
		}
		spread := time.Duration(c.paceNext - now)
		window := time.Duration(float64(c.srtt) / 1.2)
		if ss {
			window = c.srtt / 2
		}
		want := window - max(time.Millisecond, paceMinChunk*(window/segs))
		if d := spread - want; d > time.Millisecond || d < -time.Millisecond {
			t.Errorf("slow start %v: a window paced over %v, want %v", ss, spread, want)
		}
	}
}
