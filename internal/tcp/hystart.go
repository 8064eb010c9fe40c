package tcp

import "time"

// HyStart++ (RFC 9406): slow start ends early when the round trip grows,
// a sign that a queue is building before any packet is lost. Without it,
// slow start doubles the window until a loss or the peer's window stops
// it, with the queue (here: the peers' UDP sockets and tunnel devices,
// or a relay) and the send buffer behind it growing as much. After the
// round trip rises, slow start goes on at a quarter of its speed
// (conservative slow start) for five rounds, and back to full speed if
// the round trip falls again, before congestion avoidance takes over.

const (
	hsMinThresh   = 4 * time.Millisecond
	hsMaxThresh   = 16 * time.Millisecond
	hsSamples     = 8 // RTT samples a round needs before it is judged
	hsCSSDivisor  = 4
	hsCSSRounds   = 5
	hsLowSSThresh = 16 // segments: below, slow start is plain (the RFC's L)
)

type hystart struct {
	roundEnd     uint32 // sndNxt when this round began
	lastMin, min time.Duration
	samples      int
	css          bool // in conservative slow start
	cssBaseline  time.Duration
	cssRounds    int
	done         bool // slow start ended for this connection's first time
}

// hystartAck takes an RTT sample of an ACK in slow start and reports the
// divisor of the window's growth: 1, or hsCSSDivisor in conservative slow
// start. It ends slow start (sets ssthresh) after the conservative
// rounds.
func (c *Conn) hystartAck(rtt time.Duration) int {
	h := &c.hs
	if h.done || c.cwnd < hsLowSSThresh*c.mss {
		return 1
	}
	if seqGEQ(c.sndUna, h.roundEnd) {
		// A new round.
		h.roundEnd = c.sndNxt
		h.lastMin, h.min, h.samples = h.min, 0, 0
		if h.css {
			if h.cssRounds++; h.cssRounds >= hsCSSRounds {
				c.ssthresh = c.cwnd
				h.done, h.css = true, false
				return 1
			}
		}
	}
	if rtt > 0 {
		if h.min == 0 || rtt < h.min {
			h.min = rtt
		}
		h.samples++
	}
	switch {
	case !h.css && h.samples >= hsSamples && h.lastMin != 0 && h.min != 0:
		thresh := min(max(h.lastMin/8, hsMinThresh), hsMaxThresh)
		if h.min >= h.lastMin+thresh {
			h.css, h.cssBaseline, h.cssRounds = true, h.min, 0
		}
	case h.css && h.min != 0 && h.min < h.cssBaseline:
		h.css = false // the rise was a blip: back to slow start
	}
	if h.css {
		return hsCSSDivisor
	}
	return 1
}

// hystartReset starts HyStart++ afresh, as after a timeout: the next slow
// start may end early again.
func (c *Conn) hystartReset() { c.hs = hystart{} }
