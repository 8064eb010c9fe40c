package tcp

import "time"

// Congestion control: slow start and congestion avoidance with byte
// counting (RFC 3465), the window reduction on loss, restart after idle
// and pacing. Congestion avoidance is CUBIC's (cubic.go) or NewReno's.
//
// The window grows only while it limits the sender (cwndLimited), so an
// application that sends little does not inflate it, and it survives
// idle periods: after idleness it is paced out at the measured rate
// rather than in one burst, and it is halved for each five minutes of
// idleness, not below the initial window (RFC 7661).

// ccState is the state of the congestion avoidance algorithm.
type ccState struct {
	abcAcked int // bytes acknowledged toward the next NewReno increment

	// CUBIC (RFC 9438), in segments and seconds.
	wMax, k, origin, wEst, cwndPrior, frac float64
	epoch                                  int64 // stack clock; 0: no epoch
}

// initialWindow is the initial congestion window (RFC 6928).
func initialWindow(mss int) int { return 10 * mss }

// maxCwnd bounds the congestion window, far beyond any send buffer.
const maxCwnd = 1 << 30

// ccAck grows the window for acked bytes delivered while the window
// limited the sender; rtt is the ACK's round-trip sample, if any.
func (c *Conn) ccAck(acked int, rtt time.Duration, now int64) {
	if acked <= 0 {
		return
	}
	if c.cwnd < c.ssthresh {
		// Slow start counts bytes without RFC 3465's per-ACK limit:
		// pacing spreads the growth, and receivers that coalesce
		// segments acknowledge many at once. HyStart++ may slow it.
		div := c.hystartAck(rtt)
		if c.cwnd < c.ssthresh {
			inc := min(acked/div, c.ssthresh-c.cwnd)
			c.cwnd += inc
			acked -= inc * div
			if acked <= 0 {
				return
			}
		}
	}
	if c.s.reno {
		c.cc.abcAcked += acked
		if c.cc.abcAcked >= c.cwnd {
			c.cc.abcAcked -= c.cwnd
			c.cwnd += c.mss
		}
	} else {
		c.cubicAvoid(acked, now)
	}
	c.cwnd = min(c.cwnd, maxCwnd)
}

// ccCongestion returns ssthresh after a congestion event.
func (c *Conn) ccCongestion(now int64) int {
	c.cc.abcAcked = 0
	c.hs.done = true // later slow starts stop at ssthresh
	if c.s.reno {
		// RFC 5681: half the flight, or of the window if less.
		return max(min(int(c.sndNxt-c.sndUna), c.cwnd)/2, 2*c.mss)
	}
	return c.cubicCongestion()
}

// ccRestart starts congestion avoidance afresh, after a timeout.
func (c *Conn) ccRestart() {
	c.cc.epoch, c.cc.abcAcked = 0, 0
}

// nonValidatedPeriod is how long an idle connection keeps its window
// whole (RFC 7661).
const nonValidatedPeriod = 5 * time.Minute

// restartAfterIdle runs before new data goes out on a connection with
// nothing in flight.
func (c *Conn) restartAfterIdle(now int64) {
	if c.sndUna != c.sndNxt || c.lastSend == 0 {
		return
	}
	idle := now - c.lastSend
	if idle < int64(c.rto) {
		return
	}
	if c.cc.epoch != 0 {
		// CUBIC's curve does not advance while nothing is sent.
		c.cc.epoch += idle
	}
	if periods := idle / int64(nonValidatedPeriod); periods > 0 {
		c.ssthresh = max(c.ssthresh, c.cwnd*3/4)
		for range min(periods, 16) {
			c.cwnd = max(c.cwnd/2, initialWindow(c.mss))
		}
	}
}

// pace books n bytes just sent against the pacing rate: twice the
// window per round trip in slow start, 1.2 times after (Linux's ratios),
// so that a window goes out spread over the round trip instead of in a
// burst that would overflow a relay's or a socket's queue. The unit of
// pacing is a chunk of a millisecond's worth, or paceMinChunk segments at
// rates where a millisecond holds fewer: a quiet sender may burst that
// much, and a sender held back by pacing waits until a whole chunk may go
// (paceWait), as Linux does, so that the timer fires once per chunk
// rather than once per segment.
func (c *Conn) pace(n int, now int64) {
	if c.srtt == 0 {
		return
	}
	ratio := int64(120)
	if c.cwnd < c.ssthresh/2 {
		ratio = 200
	}
	perRTT := max(int64(c.cwnd)*ratio/100, 1) // bytes per srtt
	srtt := int64(c.srtt)
	seg := int64(c.mss) * srtt / perRTT // the time one full segment takes
	chunk := max(int64(time.Millisecond), paceMinChunk*seg)
	c.paceNext = max(c.paceNext, now-chunk) + int64(n)*srtt/perRTT
	c.paceChunk = chunk - seg
}

// paceMinChunk is the fewest segments pacing releases at once. Linux
// releases two (tcp_min_tso_segs); four halve what a slow sender pays
// per segment (a timer, a send, and the ACK a GRO receiver returns per
// burst) and are still a burst no relay queue notices.
const paceMinChunk = 4

// paceWait returns 0 if pacing lets a segment go at now, and otherwise
// when the pacing timer should fire: once a chunk may go.
func (c *Conn) paceWait(now int64) int64 {
	if c.paceNext <= now {
		return 0
	}
	return c.paceNext + c.paceChunk
}
