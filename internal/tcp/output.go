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
	if h.flags&(flagACK|flagRST|flagSYN) == flagACK && len(p1) == 0 && c.sackOK {
		// Bare ACKs tell what arrived beyond a hole (RFC 2018) and
		// report a duplicate (RFC 2883). Segments with data leave the
		// option out: it would not fit next to a full MSS.
		h.nsacks = c.sackBlocks(&h.sacks)
	}
	bp := c.s.pool.Get()
	c.s.send(bp, h, p1, p2)
	c.pending = append(c.pending, bp)
	if h.flags&flagACK != 0 {
		c.unacked, c.ackNow = 0, false
		c.delackAt = 0
	}
}

// sackBlocks puts the SACK blocks for the next segment in buf and returns
// their number: a pending D-SACK first, then the out-of-order ranges, the
// latest first.
func (c *Conn) sackBlocks(buf *[maxSACKBlocks]seqRange) int {
	k := 0
	if c.dsackPending {
		c.dsackPending = false
		buf[0] = c.dsack
		k = 1
	}
	for _, r := range c.ooo[:c.nooo] {
		if k == maxSACKBlocks {
			break
		}
		buf[k] = r
		k++
	}
	return k
}

// queueControl queues a segment without data.
func (c *Conn) queueControl(flags packet.TCPFlags, seq uint32) {
	h := header{seq: seq, ack: c.rcvNxt, flags: flags, wscale: -1}
	if flags&flagACK != 0 {
		h.wnd = c.windowField()
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
	c.queueControl(flagACK, c.sndNxt)
}

// ackInterval is the least time between two ACKs sent in answer to
// segments outside the window, challenge ACKs and the like: two stacks
// that disagree about sequence numbers must not trade such ACKs forever.
const ackInterval = 20 * time.Millisecond

// sendAckLimited sends an ACK unless one was sent for the same reason
// less than ackInterval ago.
func (c *Conn) sendAckLimited() {
	now := c.s.now()
	if c.lastAckLimited != 0 && now-c.lastAckLimited < int64(ackInterval) {
		return
	}
	c.lastAckLimited = now
	c.sendAck()
}

// sendSYN queues the SYN (SYN-SENT) or SYN-ACK (SYN-RECEIVED) with the
// MSS and, when allowed, window scale and SACK-permitted options.
func (c *Conn) sendSYN() {
	h := header{seq: c.iss, flags: flagSYN, mss: uint16(c.s.mss(c.id.local.Addr())), wscale: -1}
	// Offered in a SYN; in a SYN-ACK only if the peer offered it.
	h.sackOK = c.state == stateSynSent || c.sackOK
	if c.offerWScale {
		h.wscale = int8(c.rcvShift())
	}
	// The window of a SYN is never scaled.
	h.wnd = uint16(min(c.rcvWindow(), 0xffff))
	if c.state == stateSynReceived {
		h.flags |= flagACK
		h.ack = c.rcvNxt
	}
	c.queue(&h, nil, nil)
	c.advEdge = c.rcvNxt + uint32(h.wnd)
	c.sndNxt = c.iss + 1
	if c.rtoAt == 0 {
		c.rtoAt = c.s.now() + int64(c.rto)
	}
	c.armTimer()
}

// rcvWindow is the receive window the buffer's limit allows.
func (c *Conn) rcvWindow() int { return max(c.rcvLimit-c.rcvBuf.n, 0) }

// acceptWindow is how far beyond rcvNxt data is taken: the larger of the
// window last advertised and the one the limit allows now.
func (c *Conn) acceptWindow() int {
	return max(int(int32(c.advEdge-c.rcvNxt)), c.rcvWindow())
}

// windowField returns the window to advertise, scaled, and records its
// right edge, which never moves left (RFC 9293, section 3.8.6.2.2): a
// limit that shrank closes the window only as data arrives.
func (c *Conn) windowField() uint16 {
	shift := c.rcvShift()
	w := uint32(c.rcvWindow()) >> shift
	if old := c.advEdge - c.rcvNxt; int32(old) > 0 && w<<shift < old {
		w = (old + 1<<shift - 1) >> shift
	}
	w = min(w, 0xffff)
	c.advEdge = seqMax(c.advEdge, c.rcvNxt+w<<shift)
	c.advWnd = int(c.advEdge - c.rcvNxt)
	return uint16(w)
}

// consumed follows the application's read of n bytes: it gives back
// chunks, tunes the receive limit and tells the peer when the window has
// opened by enough (receiver-side silly window avoidance).
func (c *Conn) consumed(n int) {
	now := c.s.now()
	c.copied += int64(n)
	c.rcvSpaceAdjust(now)
	if c.rcvBuf.n == 0 && c.nooo == 0 {
		c.rcvBuf.shrinkIf(c.state == stateClosed)
	}
	switch c.state {
	case stateEstablished, stateFinWait1, stateFinWait2:
	default:
		return
	}
	shift := c.rcvShift()
	edge := c.rcvNxt + uint32(c.rcvWindow())>>shift<<shift
	if c.unacked >= 2 || int32(edge-c.advEdge) >= int32(min(c.rcvLimit/2, 2*c.mss)) {
		// The ACK that input left to this read (ackDue), or a window
		// that opened by enough to tell.
		c.sendAck()
	}
}

// finSeq returns the sequence number of our FIN, once queued.
func (c *Conn) finSeq() uint32 { return c.bufSeq + uint32(c.sndBuf.n) }

// finSent reports whether our FIN has been sent at least once.
func (c *Conn) finSent() bool { return c.finQueued && seqGT(c.sndNxt, c.finSeq()) }

// trySend sends what the congestion window, the peer's window and pacing
// allow: first segments taken for lost, then new data, and the FIN once
// all data is out (RFC 6675, NextSeg).
func (c *Conn) trySend() {
	switch c.state {
	case stateEstablished, stateCloseWait, stateFinWait1, stateClosing, stateLastAck:
	default:
		return
	}
	now := c.s.now()
	for {
		if c.paceAt = c.paceWait(now); c.paceAt != 0 {
			return
		}
		pipe := c.pipe()
		c.maxPipe = max(c.maxPipe, pipe)
		if pipe >= c.cwnd {
			if c.wantsToSend() {
				c.cwndLimited = c.sndNxt
			}
			return
		}
		if i, ok := c.nextLost(); ok && !c.recov.frtoNew {
			c.retransmit(i, now)
			continue
		}
		if !c.sendNew(now) {
			return
		}
	}
}

// wantsToSend reports whether segments wait for the congestion window.
func (c *Conn) wantsToSend() bool {
	return c.lostOut > c.retransOut || int(c.sndNxt-c.bufSeq) < c.sndBuf.n || c.finQueued && !c.finSent()
}

// sendNew sends one segment of new data (or the FIN) if the peer's window
// and the silly window rules let it, and reports whether it did.
func (c *Conn) sendNew(now int64) bool {
	off := int(c.sndNxt - c.bufSeq)
	avail := c.sndBuf.n - off
	finPending := c.finQueued && !c.finSent()
	if avail <= 0 && !finPending {
		return false
	}
	if c.sent.full() {
		return false
	}
	usable := 0
	if edge := c.sndUna + c.sndWnd; seqGT(edge, c.sndNxt) {
		usable = int(edge - c.sndNxt)
	}
	n := min(max(avail, 0), c.mss, usable)
	if n < avail && n < c.mss {
		// Sender-side silly window avoidance: a partial segment goes
		// out only when nothing is in flight; a window too small for
		// anything is probed (timer.go).
		if n == 0 || c.sndNxt != c.sndUna {
			if c.sndNxt == c.sndUna && c.persistAt == 0 {
				c.persistAt = now + int64(c.probeInterval())
			}
			return false
		}
	}
	fin := finPending && off+n == c.sndBuf.n
	if n == 0 && !fin {
		return false
	}
	c.persistAt, c.probes = 0, 0
	c.restartAfterIdle(now)
	c.sendData(c.sndNxt, off, n, fin)
	seg := sentSeg{seq: c.sndNxt, len: uint16(n), xmit: now}
	if fin {
		seg.len++
		seg.flags = segFIN
	}
	c.sent.push(seg)
	c.sndNxt += uint32(seg.len)
	c.sent1(int(seg.len), now)
	return true
}

// sent1 books a segment of n sequence numbers just sent.
func (c *Conn) sent1(n int, now int64) {
	c.pace(n, now)
	c.lastSend = now
	if c.recov.state == inRecovery {
		c.recov.prrOut += n
	}
	if c.rtoAt == 0 {
		c.rtoAt = now + int64(c.rto)
	}
	c.scheduleTLP(now)
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

// retransmit sends segment i again, exactly as first cut.
func (c *Conn) retransmit(i int, now int64) {
	s := c.sent.at(i)
	fin := s.flags&segFIN != 0
	n := int(s.len)
	if fin {
		n--
	}
	c.sendData(s.seq, int(s.seq-c.bufSeq), n, fin)
	s.xmit = now
	s.flags |= segEverRetrans
	c.setFlag(s, segRetrans)
	c.s.retransmit.Add(1)
	c.recov.undoRetrans++
	c.recov.undoSent++
	if c.rxtStart == 0 {
		c.rxtStart = now
	}
	c.sent1(int(s.len), now)
}
