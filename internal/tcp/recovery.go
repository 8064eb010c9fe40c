package tcp

import "time"

// Loss recovery. RACK (rack.go) or, without SACK, three duplicate ACKs
// take segments for lost; the first loss starts fast recovery, in which
// proportional rate reduction (RFC 6937) brings the congestion window down
// to ssthresh while each ACK lets out what left the network, and trySend
// resends the lost segments before any new data (RFC 6675). A
// retransmission timeout takes every segment not SACKed for lost, keeping
// the scoreboard (RFC 6675, section 5.1), and resends from one segment in
// slow start. If D-SACKs show that every retransmission of an episode was
// needless (the originals were only late), the episode is undone: the
// window and ssthresh return to what they were (RFC 3708's idea).

// States of loss recovery.
const (
	open       = iota // no recovery
	inRecovery        // fast recovery
	inLoss            // after a retransmission timeout
)

type recovery struct {
	state   int
	recover uint32 // sndNxt when the episode began: it ends once acknowledged

	// Proportional rate reduction (RFC 6937).
	prrDelivered, prrOut, recoverFS int

	// Undo of spurious episodes: the window before, and the episode's
	// retransmissions not yet D-SACKed.
	undoing                  bool
	undoRetrans              int // resent and not D-SACKed
	undoSent                 int // resent in the episode
	undoEnd                  uint32
	priorCwnd, priorSsthresh int
	priorCC                  ccState

	// F-RTO (frto.go).
	frto    bool // the timeout may be spurious: the next ACKs tell
	frtoNew bool // send new data, not retransmissions, after this ACK
}

// dupThresh is the duplicate ACKs (or SACKed segments) that show a loss.
const dupThresh = 3

// startUndo records the window an episode may have to return to.
func (c *Conn) startUndo() {
	if c.recov.undoing {
		return
	}
	c.recov.undoing = true
	c.recov.undoRetrans, c.recov.undoSent = 0, 0
	c.recov.priorCwnd, c.recov.priorSsthresh, c.recov.priorCC = c.cwnd, c.ssthresh, c.cc
}

// tryUndo undoes the episode once every retransmission in it has been
// D-SACKed, or, if late, a segment taken for lost arrived before it was
// resent and nothing resent is awaiting its D-SACK.
func (c *Conn) tryUndo(late bool) {
	r := &c.recov
	if !r.undoing || r.undoSent == 0 && !late || r.undoRetrans > 0 {
		return
	}
	// The segments were late, not lost: reordering, which RACK now
	// allows for.
	c.rack.reordering = true
	c.undo()
}

// undo ends the episode and returns the window and ssthresh to what
// they were before it; what was taken for lost and not resent is not.
func (c *Conn) undo() {
	r := &c.recov
	r.undoing, r.frto, r.frtoNew = false, false, false
	c.cwnd = max(c.cwnd, r.priorCwnd)
	c.ssthresh = max(c.ssthresh, r.priorSsthresh)
	c.cc = r.priorCC
	if r.state != open {
		r.state = open
		c.rackRecoveryEnded()
	}
	for i := range c.sent.n {
		if s := c.sent.at(i); s.flags&(segLost|segRetrans) == segLost {
			c.clearFlag(s, segLost)
		}
	}
	c.s.undos.Add(1)
}

// dupAckLoss is loss detection for a peer without SACK: the third
// duplicate ACK takes the first segment for lost (RFC 5681), and in
// recovery each partial acknowledgement takes the next (RFC 6582).
func (c *Conn) dupAckLoss(prevUna uint32) {
	if c.sent.n == 0 {
		return
	}
	first := c.sent.at(0)
	switch {
	case c.recov.state == open && c.dupAcks >= dupThresh:
		c.markLost(0)
	case c.recov.state == inRecovery && c.sndUna != prevUna && first.flags&segRetrans == 0:
		c.markLost(0)
	}
}

// updateRecovery moves the congestion state on after an ACK that
// delivered bytes, cumulatively or by SACK.
func (c *Conn) updateRecovery(prevUna uint32, delivered int, rtt time.Duration, now int64) {
	r := &c.recov
	if r.undoing && r.state == open && seqGEQ(c.sndUna, r.undoEnd) {
		r.undoing = false // the episode's D-SACKs had their chance
	}
	switch r.state {
	case inRecovery:
		if seqLT(c.sndUna, r.recover) {
			c.prr(delivered)
			return
		}
		// Recovery is over: continue at ssthresh (RFC 6937).
		r.state = open
		r.undoEnd = c.sndNxt
		c.cwnd = max(c.ssthresh, 2*c.mss)
		c.rackRecoveryEnded()
		return
	case inLoss:
		if seqGEQ(c.sndUna, r.recover) {
			r.state = open
			r.undoEnd = c.sndNxt
			c.rackRecoveryEnded()
		}
	}
	if r.state == open && c.lostOut > 0 {
		c.enterRecovery(now)
		c.prr(delivered)
		return
	}
	if c.windowLimited(prevUna) {
		c.ccAck(delivered, rtt, now)
	}
}

// windowLimited reports whether the congestion window held the sender
// back while the data now acknowledged was sent, or, in slow start,
// whether the window is less than twice what was in flight in the last
// round trips (Linux's rule): pacing spreads a slow-start flight, and
// the window must stay ahead of it.
func (c *Conn) windowLimited(prevUna uint32) bool {
	if seqGEQ(c.sndUna, c.roundEnd) {
		c.roundEnd = c.sndNxt
		c.lastMaxPipe, c.maxPipe = c.maxPipe, 0
	}
	if seqLT(prevUna, c.cwndLimited) {
		return true
	}
	return c.cwnd < c.ssthresh && c.cwnd < 2*max(c.maxPipe, c.lastMaxPipe)
}

// enterRecovery starts fast recovery (RFC 6675, RFC 6937).
func (c *Conn) enterRecovery(now int64) {
	c.startUndo()
	r := &c.recov
	c.ssthresh = c.ccCongestion(now)
	r.state = inRecovery
	r.recover = c.sndNxt
	r.prrDelivered, r.prrOut = 0, 0
	r.recoverFS = max(int(c.sndNxt-c.sndUna), 1)
	c.tlp.active, c.tlp.at = false, 0
	c.s.recoveries.Add(1)
}

// prr sets the congestion window for the next sends of fast recovery
// from the bytes an ACK delivered (RFC 6937, with the slow-start
// reduction bound).
func (c *Conn) prr(delivered int) {
	r := &c.recov
	r.prrDelivered += delivered
	pipe := c.pipe()
	var sndcnt int
	if pipe > c.ssthresh {
		sndcnt = int((int64(r.prrDelivered)*int64(c.ssthresh)+int64(r.recoverFS)-1)/int64(r.recoverFS)) - r.prrOut
	} else {
		limit := max(r.prrDelivered-r.prrOut, delivered) + c.mss
		sndcnt = min(c.ssthresh-pipe, limit)
	}
	sndcnt = max(sndcnt, 0)
	if r.prrOut == 0 && sndcnt == 0 {
		sndcnt = c.mss // the fast retransmit
	}
	c.cwnd = pipe + sndcnt
}

// enterLoss follows a retransmission timeout: everything not SACKed is
// taken for lost and resent from a window of one segment. ssthresh is
// lowered only by the first timeout of an episode.
func (c *Conn) enterLoss(now int64) {
	c.startUndo()
	r := &c.recov
	if r.state == open {
		c.ssthresh = c.ccCongestion(now)
	}
	c.ccRestart()
	c.cwnd = c.mss
	r.frto, r.frtoNew = r.state == open && c.sackOK, false
	r.state = inLoss
	r.recover = c.sndNxt
	if c.sent.n > 0 && c.sent.at(0).flags&segSACKed != 0 {
		// The cumulative acknowledgement stopped at data the peer
		// SACKed: it dropped what it SACKed (RFC 2018, section 8).
		for i := range c.sent.n {
			c.clearFlag(c.sent.at(i), segSACKed)
		}
	}
	for i := range c.sent.n {
		c.markLost(i)
	}
	c.tlp.active, c.tlp.at = false, 0
	c.rack.at = 0
	c.paceNext = 0
}
