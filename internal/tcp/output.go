package tcp

import (
	"time"

	"github.com/microlink-go/microlink/internal/packet"
)

// queue builds a segment with header h and the given payload into a pooled
// buffer, to be sent when mu is released. Every segment carries the
// current acknowledgement, so any pending delayed ACK is settled.
func (c *Conn) queue(h *header, p1, p2 []byte) {
	h.src, h.dst = c.id.local, c.id.remote
	bp := c.s.pool.Get()
	c.s.send(bp, h, p1, p2)
	c.pending = append(c.pending, bp)
	if h.flags&flagACK != 0 {
		c.unacked = 0
		c.delackAt = time.Time{}
	}
}

// queueControl queues a segment without data.
func (c *Conn) queueControl(flags packet.TCPFlags, seq uint32) {
	h := header{seq: seq, ack: c.rcvNxt, flags: flags, wscale: -1}
	if flags&flagACK != 0 {
		h.wnd = c.windowField()
	}
	if flags&(flagACK|flagRST) == flagACK && c.sackOK && c.nooo > 0 {
		// Bare ACKs tell what arrived beyond a hole (RFC 2018).
		h.sacks = c.ooo[:min(c.nooo, maxSACKBlocks)]
	}
	c.queue(&h, nil, nil)
}

// sendAck queues an acknowledgement, or the SYN-ACK again in SYN-RECEIVED.
// A bare ACK carries the highest sequence number sent, which the peer
// accepts even while this side retransmits older data.
func (c *Conn) sendAck() {
	if c.state == stateSynReceived {
		c.sendSYN()
		return
	}
	c.queueControl(flagACK, c.sndMax)
}

// ackInterval is the least time between two ACKs sent in answer to
// segments outside the window, challenge ACKs and the like: two stacks
// that disagree about sequence numbers must not trade such ACKs forever.
const ackInterval = 20 * time.Millisecond

// sendAckLimited sends an ACK unless one was sent for the same reason
// less than ackInterval ago.
func (c *Conn) sendAckLimited() {
	now := time.Now()
	if now.Sub(c.lastAckLimited) < ackInterval {
		return
	}
	c.lastAckLimited = now
	c.sendAck()
}

// sendSYN queues the SYN (SYN-SENT) or SYN-ACK (SYN-RECEIVED) with the
// MSS and, when allowed, window scale options.
func (c *Conn) sendSYN() {
	h := header{seq: c.iss, flags: flagSYN, mss: uint16(c.s.mss(c.id.local.Addr())), wscale: -1}
	// Offered in a SYN; in a SYN-ACK only if the peer offered it.
	h.sackOK = c.state == stateSynSent || c.sackOK
	if c.offerWScale {
		h.wscale = int8(c.rcvShift)
	}
	// The window of a SYN is never scaled.
	h.wnd = uint16(min(c.rcvBuf.free(), 0xffff))
	if c.state == stateSynReceived {
		h.flags |= flagACK
		h.ack = c.rcvNxt
	}
	c.queue(&h, nil, nil)
	c.advEdge = c.rcvNxt + uint32(h.wnd)
	c.sndNxt = c.iss + 1
	c.sndMax = seqMax(c.sndMax, c.sndNxt)
	if c.retries == 0 && !c.timing {
		c.timing, c.rttSeq, c.rttStart = true, c.sndNxt, time.Now()
	}
	if c.rtoAt.IsZero() {
		c.rtoAt = time.Now().Add(c.rto)
	}
	c.armTimer()
}

// windowField returns the window to advertise, scaled, and records its
// right edge.
func (c *Conn) windowField() uint16 {
	w := min(c.rcvBuf.free()>>c.rcvShift, 0xffff)
	c.advEdge = c.rcvNxt + uint32(w<<c.rcvShift)
	return uint16(w)
}

// windowUpdate sends an ACK after a read if the window has opened by
// enough to be worth telling the peer about (receiver-side silly window
// avoidance).
func (c *Conn) windowUpdate() {
	switch c.state {
	case stateEstablished, stateFinWait1, stateFinWait2:
	default:
		return
	}
	edge := c.rcvNxt + uint32(c.rcvBuf.free()>>c.rcvShift<<c.rcvShift)
	if int(edge-c.advEdge) >= min(c.rcvBuf.size()/2, 2*c.mss) {
		c.sendAck()
	}
}

// finSeq returns the sequence number of our FIN, once queued.
func (c *Conn) finSeq() uint32 { return c.bufSeq + uint32(c.sndBuf.n) }

// finSent reports whether our FIN has been sent at least once.
func (c *Conn) finSent() bool { return c.finQueued && seqGT(c.sndMax, c.finSeq()) }

// trySend sends as much new (or, after a timeout, old) data as the send
// and congestion windows allow, and the FIN once all data is out.
func (c *Conn) trySend() {
	switch c.state {
	case stateEstablished, stateCloseWait, stateFinWait1, stateClosing, stateLastAck:
	default:
		return
	}
	for {
		off := int(c.sndNxt - c.bufSeq)
		avail := c.sndBuf.n - off
		finPending := c.finQueued && seqLEQ(c.sndNxt, c.finSeq())
		if avail <= 0 && !finPending {
			return
		}
		inFlight := int(c.sndNxt - c.sndUna)
		cwnd := c.cwnd
		if !c.inRecovery {
			// Limited transmit (RFC 3042): each of the first two
			// duplicate ACKs lets one new segment out.
			cwnd += min(c.dupAcks, 2) * c.mss
		}
		usable := max(min(int(c.sndWnd), cwnd)-inFlight, 0)
		n := min(max(avail, 0), c.mss, usable)
		if n < avail && n < c.mss {
			switch {
			case inFlight > 0:
				return // wait for the window to open
			case n == 0 && c.sndWnd == 0:
				n = 1 // zero-window probe
			case n == 0:
				return
			}
		}
		fin := finPending && off+n == c.sndBuf.n
		if n == 0 && !fin {
			return
		}
		c.sendData(c.sndNxt, off, n, fin)
		c.sndNxt += uint32(n)
		if fin {
			c.sndNxt++
		}
		if seqGT(c.sndNxt, c.sndMax) {
			if !c.timing && c.retries == 0 {
				c.timing, c.rttSeq, c.rttStart = true, c.sndNxt, time.Now()
			}
			c.sndMax = c.sndNxt
		}
		if c.rtoAt.IsZero() {
			c.rtoAt = time.Now().Add(c.rto)
		}
		if fin {
			return
		}
	}
}

// sendData queues n bytes from offset off of the send buffer, at seq,
// with a FIN if fin.
func (c *Conn) sendData(seq uint32, off, n int, fin bool) {
	h := header{seq: seq, ack: c.rcvNxt, flags: flagACK, wscale: -1}
	if off+n == c.sndBuf.n {
		h.flags |= flagPSH
	}
	if fin {
		h.flags |= flagFIN
	}
	h.wnd = c.windowField()
	p1, p2 := c.sndBuf.peek(off, n)
	c.queue(&h, p1, p2)
}

// retransmitFirst sends the oldest unacknowledged segment again.
func (c *Conn) retransmitFirst() {
	c.s.retransmit.Add(1)
	c.timing = false
	off := int(c.sndUna - c.bufSeq)
	n := min(c.sndBuf.n-off, c.mss)
	if n < 0 {
		n = 0
	}
	fin := c.finQueued && off+n == c.sndBuf.n && c.finSent()
	if n == 0 && !fin {
		return
	}
	c.sendData(c.sndUna, off, n, fin)
	c.highRxt = seqMax(c.highRxt, c.sndUna+uint32(n))
	c.rtoAt = time.Now().Add(c.rto)
}
