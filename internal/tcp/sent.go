package tcp

// The sender's record of what it sent and the peer has not acknowledged
// cumulatively: one entry per segment, in sequence order, with its state
// for loss recovery (the SACK scoreboard of RFC 6675) and the time it was
// last sent (RACK, RFC 8985). Retransmissions resend a segment exactly as
// it was first cut.

// Flags of a sent segment.
const (
	segSACKed      = 1 << iota // the peer reported it in a SACK block
	segLost                    // taken for lost: to be resent, or resent
	segRetrans                 // its retransmission is in flight (counted in retransOut)
	segEverRetrans             // sent more than once: no RTT sample from it
	segFIN                     // its last sequence number is the FIN
)

// sentSeg is one segment sent and not yet cumulatively acknowledged.
type sentSeg struct {
	seq   uint32
	len   uint16 // sequence numbers: data bytes, plus one for a FIN
	flags uint8
	xmit  int64 // when last sent (stack clock)
}

func (s *sentSeg) end() uint32 { return s.seq + uint32(s.len) }

// maxSentSegs bounds the segments in flight on one connection: a window
// of 16 MiB in full segments fits; many tiny segments
// wait for room.
const maxSentSegs = 16384

// sentQueue is a ring of sent segments; its size is a power of two.
type sentQueue struct {
	segs  []sentSeg
	first int
	n     int
}

func (q *sentQueue) at(i int) *sentSeg { return &q.segs[(q.first+i)&(len(q.segs)-1)] }

func (q *sentQueue) full() bool { return q.n == maxSentSegs }

// push appends s, growing the ring as needed; the caller checks full.
func (q *sentQueue) push(s sentSeg) {
	if q.n == len(q.segs) {
		segs := make([]sentSeg, max(2*len(q.segs), 64))
		for i := range q.n {
			segs[i] = *q.at(i)
		}
		q.segs, q.first = segs, 0
	}
	q.segs[(q.first+q.n)&(len(q.segs)-1)] = s
	q.n++
}

func (q *sentQueue) popFront() {
	q.first = (q.first + 1) & (len(q.segs) - 1)
	q.n--
}

// search returns the index of the first segment that ends after seq.
func (q *sentQueue) search(seq uint32) int {
	lo, hi := 0, q.n
	for lo < hi {
		m := (lo + hi) / 2
		if seqLEQ(q.at(m).end(), seq) {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// shrink lets go of an empty ring.
func (q *sentQueue) shrink() {
	if q.n == 0 {
		q.segs, q.first = nil, 0
	}
}

// pipe is the sender's estimate of the bytes in the network (RFC 6675,
// section 4): sent and not acknowledged, less what the peer SACKed or is
// taken for lost, plus retransmissions in flight.
func (c *Conn) pipe() int {
	return int(c.sndNxt-c.sndUna) - c.sackedOut - c.lostOut + c.retransOut
}

// setFlag sets f on s, which spans n sequence numbers, and keeps the
// counters of pipe in step.
func (c *Conn) setFlag(s *sentSeg, f uint8) {
	if s.flags&f != 0 {
		return
	}
	n := int(s.len)
	switch f {
	case segSACKed:
		c.sackedOut += n
		c.sackedSegs++
		c.clearFlag(s, segLost)
		c.clearFlag(s, segRetrans)
	case segLost:
		c.lostOut += n
	case segRetrans:
		c.retransOut += n
	}
	s.flags |= f
}

func (c *Conn) clearFlag(s *sentSeg, f uint8) {
	if s.flags&f == 0 {
		return
	}
	n := int(s.len)
	switch f {
	case segSACKed:
		c.sackedOut -= n
		c.sackedSegs--
	case segLost:
		c.lostOut -= n
	case segRetrans:
		c.retransOut -= n
	}
	s.flags &^= f
}

// trimFront drops the first k sequence numbers of s, the first segment,
// which the peer acknowledged in part.
func (c *Conn) trimFront(s *sentSeg, k int) {
	if s.flags&segSACKed != 0 {
		c.sackedOut -= k
	}
	if s.flags&segLost != 0 {
		c.lostOut -= k
	}
	if s.flags&segRetrans != 0 {
		c.retransOut -= k
	}
	s.seq += uint32(k)
	s.len -= uint16(k)
}

// forget removes the first segment, acknowledged in full.
func (c *Conn) forget() {
	s := c.sent.at(0)
	c.clearFlag(s, segSACKed)
	c.clearFlag(s, segLost)
	c.clearFlag(s, segRetrans)
	c.sent.popFront()
	if c.rxtHint > 0 {
		c.rxtHint--
	}
}

// markLost takes segment i for lost. A retransmission of it in flight is
// lost too: it no longer counts in the pipe, and the segment is due again.
func (c *Conn) markLost(i int) {
	s := c.sent.at(i)
	if s.flags&segSACKed != 0 {
		return
	}
	c.setFlag(s, segLost)
	c.clearFlag(s, segRetrans)
	c.rxtHint = min(c.rxtHint, i)
}

// nextLost returns the first segment taken for lost and not resent yet.
func (c *Conn) nextLost() (int, bool) {
	if c.lostOut == 0 {
		c.rxtHint = c.sent.n
		return 0, false
	}
	for i := c.rxtHint; i < c.sent.n; i++ {
		if s := c.sent.at(i); s.flags&(segLost|segRetrans|segSACKed) == segLost {
			c.rxtHint = i
			return i, true
		}
	}
	c.rxtHint = c.sent.n
	return 0, false
}
