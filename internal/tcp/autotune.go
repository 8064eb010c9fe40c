package tcp

import (
	"sync/atomic"
	"time"
)

// Buffer autotuning. Each connection has a send and a receive limit, which
// start at initialBuffer and grow with the bandwidth-delay product the
// connection measures, up to Config.SendBuffer and ReceiveBuffer, while
// the stack's MemoryLimit has room; after idleShrink without data they go
// back to the start. The limits bound what the buffers may hold, and the
// buffers take memory (chunks) only for the data they hold.
//
// The receive limit follows the application: once per round trip it is
// set to about twice what the application read in the last one (dynamic
// right-sizing, as Linux does), so a window grows ahead of the sender's
// congestion window but not past what the reader takes. The send limit
// follows the congestion window (growSend).

// memory is the stack's budget for the growth of the connections' buffer
// limits beyond their start.
type memory struct {
	limit int64
	used  atomic.Int64
}

// grant takes up to want bytes from the budget and returns how many.
func (m *memory) grant(want int) int {
	for {
		u := m.used.Load()
		g := min(int64(want), m.limit-u)
		if g <= 0 {
			return 0
		}
		if m.used.CompareAndSwap(u, u+g) {
			return int(g)
		}
	}
}

func (m *memory) release(n int) { m.used.Add(-int64(n)) }

// idleShrink is how long a connection goes without data before its
// buffer limits go back to the start, at the least.
const idleShrink = time.Second

func (s *Stack) initialBuffer(limit int) int { return min(initialBuffer, limit) }

// reserveBuffers lets the connection's limits grow, once the handshake
// is complete. The starting limits are not counted: the budget bounds
// growth beyond them.
func (c *Conn) reserveBuffers() { c.budgeted = true }

// releaseBuffers gives the growth back when the connection closes, and
// the buffers but for data the application has yet to read.
func (c *Conn) releaseBuffers() {
	if c.budgeted {
		c.budgeted = false
		c.s.mem.release(c.rcvLimit - c.s.initialBuffer(c.s.cfg.ReceiveBuffer) + c.sndLimit - c.s.initialBuffer(c.s.cfg.SendBuffer))
	}
	c.sndBuf.shrink()
	c.sndBuf.n = 0
	c.nooo = 0
	if c.rcvBuf.n == 0 {
		c.rcvBuf.shrink()
	}
	c.sent = sentQueue{}
	c.sackedOut, c.lostOut, c.retransOut, c.sackedSegs = 0, 0, 0, 0
}

// grow raises *limit toward target, within max and the budget.
func (c *Conn) grow(limit *int, target, max int) bool {
	target = min(target, max)
	if target <= *limit || !c.budgeted {
		return false
	}
	g := c.s.mem.grant(target - *limit)
	*limit += g
	return g > 0
}

// sizeSend sizes the send limit for the congestion window: what is in
// flight and as much again in slow start, where the window doubles each
// round trip, or a quarter more (at least 64 KiB) after. The limit
// follows the window down too, so that a sender whose window shrank does
// not hold data it cannot send soon; in recovery it follows ssthresh,
// which the window returns to.
func (c *Conn) sizeSend() {
	w := c.cwnd
	if c.recov.state != open {
		w = max(w, min(c.ssthresh, maxCwnd))
	}
	target := 2 * w
	if w >= c.ssthresh {
		target = w + max(w/4, initialBuffer)
	}
	target = max(min(target, c.s.cfg.SendBuffer), c.s.initialBuffer(c.s.cfg.SendBuffer))
	switch {
	case target > c.sndLimit:
		if c.grow(&c.sndLimit, target, c.s.cfg.SendBuffer) {
			c.sndCond.Broadcast()
		}
	case target < c.sndLimit:
		if c.budgeted {
			c.s.mem.release(c.sndLimit - target)
		}
		c.sndLimit = target
	}
}

// noteData records that data moved, for idleness.
func (c *Conn) noteData(now int64) { c.lastData = now }

// idleDeadline returns when the connection's buffers shrink if no data
// moves, or 0 if they are at their start sizes.
func (c *Conn) idleDeadline() int64 {
	if c.sndBuf.n > 0 || c.rcvBuf.n > 0 || c.nooo > 0 {
		return 0 // not idle, or not for shrinking
	}
	rs, ss := c.s.initialBuffer(c.s.cfg.ReceiveBuffer), c.s.initialBuffer(c.s.cfg.SendBuffer)
	if c.rcvLimit <= rs && c.sndLimit <= ss && len(c.rcvBuf.slots) == 0 && len(c.sndBuf.slots) == 0 && len(c.sent.segs) == 0 {
		return 0
	}
	return c.lastData + int64(max(idleShrink, 8*c.srtt))
}

// shrinkIdle brings the limits of an idle connection back to their start
// and lets go of its empty buffers.
func (c *Conn) shrinkIdle() {
	if c.rcvBuf.n == 0 && c.nooo == 0 {
		rs := c.s.initialBuffer(c.s.cfg.ReceiveBuffer)
		if c.rcvLimit > rs {
			if c.budgeted {
				c.s.mem.release(c.rcvLimit - rs)
			}
			c.rcvLimit = rs
		}
		c.rcvSpace = c.initialRcvSpace()
		c.rcvBuf.shrink()
	}
	if c.sndBuf.n == 0 && c.sent.n == 0 {
		ss := c.s.initialBuffer(c.s.cfg.SendBuffer)
		if c.sndLimit > ss {
			if c.budgeted {
				c.s.mem.release(c.sndLimit - ss)
			}
			c.sndLimit = ss
		}
		c.sndBuf.shrink()
		c.sent.shrink()
	}
}

func (c *Conn) initialRcvSpace() int { return min(c.rcvLimit/2, 10*c.mss) }

// rcvRTTMeasure estimates the round-trip time from the receiving side
// alone: the time the peer takes to send a window's worth of data is at
// least one round trip (Linux's tcp_rcv_rtt_measure). Called when data
// arrives in order.
func (c *Conn) rcvRTTMeasure(now int64) {
	if c.rcvRTTTime != 0 && seqLT(c.rcvNxt, c.rcvRTTSeq) {
		return
	}
	if c.rcvRTTTime != 0 {
		m := now - c.rcvRTTTime
		switch {
		case c.rcvRTT == 0 || m < c.rcvRTT:
			c.rcvRTT = m
		default:
			c.rcvRTT += (m - c.rcvRTT) / 8
		}
	}
	c.rcvRTTSeq = c.rcvNxt + uint32(max(c.rcvWindow(), c.mss))
	c.rcvRTTTime = now
}

// rcvSpaceAdjust runs after the application read: once per round trip it
// grows the receive limit to twice what was read in that round trip,
// more when that amount grows fast (slow start).
func (c *Conn) rcvSpaceAdjust(now int64) {
	rtt := c.rcvRTT
	if c.srtt > 0 && (rtt == 0 || int64(c.srtt) < rtt) {
		rtt = int64(c.srtt)
	}
	if rtt == 0 || now-c.rcvSpaceTime < rtt {
		return
	}
	copied := int(c.copied - c.rcvSpaceMark)
	if copied > c.rcvSpace {
		win := 2*copied + 16*c.mss
		if c.rcvSpace > 0 {
			win += 2 * int(int64(win)*int64(copied-c.rcvSpace)/int64(c.rcvSpace))
		}
		c.grow(&c.rcvLimit, win, c.s.cfg.ReceiveBuffer)
		c.rcvSpace = copied
	}
	c.rcvSpaceMark, c.rcvSpaceTime = c.copied, now
}
