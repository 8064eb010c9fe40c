package tcp

import "time"

// RACK-TLP (RFC 8985). RACK takes a segment for lost when a segment sent
// after it was delivered and a round trip plus a reordering window has
// passed since it was sent, so a lost retransmission is found like any
// other loss, within a round trip, and a lone loss near the end of a flight
// too, by the reordering timer. TLP covers the tail: when a flight's last
// segments (or their ACKs) are lost, nothing is delivered after them, so
// a probe goes out after about two round trips (instead of a timeout
// several times longer) and its acknowledgement or SACK starts recovery.

type rackState struct {
	valid      bool
	xmit       int64  // send time of the latest sent segment delivered
	end        uint32 // its end
	rtt        int64  // its round trip
	fack       uint32 // highest end delivered
	reordering bool   // a segment was delivered after a later one
	at         int64  // the reordering timer, 0: not armed

	reoWndMult, reoWndPersist int
	dsackRound                uint32
	dsackRoundOn              bool
}

type tlpState struct {
	at      int64  // the probe timeout, 0: not armed
	active  bool   // a probe is out
	retrans bool   // it resent the last segment
	end     uint32 // sndNxt when it went out
}

// sentAfter reports whether a segment sent at t1 ending at e1 was sent
// after one sent at t2 ending at e2.
func sentAfter(t1 int64, e1 uint32, t2 int64, e2 uint32) bool {
	return t1 > t2 || t1 == t2 && seqGT(e1, e2)
}

// reoWnd is the reordering window (RFC 8985, section 6.2, step 4): none
// while no reordering was seen and either recovery is on or three
// segments were SACKed (DupThresh's rule), else a quarter of the minimum
// RTT, more after D-SACKs, at most SRTT.
func (c *Conn) reoWnd() int64 {
	if !c.rack.reordering && (c.recov.state != open || c.sackedSegs >= dupThresh) {
		return 0
	}
	return min(int64(c.rack.reoWndMult)*int64(c.minRTT)/4, int64(c.srtt))
}

// rackDSACK widens the reordering window once per round trip that
// brings D-SACKs, for 16 recoveries.
func (c *Conn) rackDSACK() {
	r := &c.rack
	if r.dsackRoundOn && seqGEQ(c.sndUna, r.dsackRound) {
		r.dsackRoundOn = false
	}
	if !r.dsackRoundOn {
		r.dsackRoundOn, r.dsackRound = true, c.sndNxt
		r.reoWndMult = min(r.reoWndMult+1, 64)
		r.reoWndPersist = 16
	}
}

func (c *Conn) rackRecoveryEnded() {
	if c.rack.reoWndPersist--; c.rack.reoWndPersist <= 0 {
		c.rack.reoWndMult = 1
	}
}

// rackDetectLoss marks lost the segments RACK finds lost, and arms the
// reordering timer for those that may still be only late.
func (c *Conn) rackDetectLoss(now int64) {
	c.rack.at = 0
	if !c.rack.valid {
		return
	}
	reo := c.reoWnd()
	var timeout int64
	for i := 0; i < c.sent.n; i++ {
		s := c.sent.at(i)
		if s.flags&segSACKed != 0 || s.flags&(segLost|segRetrans) == segLost {
			continue // delivered, or known lost and not resent yet
		}
		if !sentAfter(c.rack.xmit, c.rack.end, s.xmit, s.end()) {
			if s.flags&segEverRetrans == 0 {
				// Segments are first sent in order: every later
				// one was sent after this one.
				break
			}
			continue
		}
		if left := s.xmit + c.rack.rtt + reo - now; left > 0 {
			timeout = max(timeout, left)
		} else {
			c.markLost(i)
		}
	}
	if timeout > 0 {
		c.rack.at = now + timeout
	}
}

// rackTimeout runs when the reordering timer fires.
func (c *Conn) rackTimeout(now int64) {
	c.rackDetectLoss(now)
	if c.recov.state == open && c.lostOut > 0 {
		c.enterRecovery(now)
		c.prr(0)
	}
	c.trySend()
}

// maxAckDelay is what a probe timeout allows for a delayed ACK of a lone
// segment (RFC 8985's WCDelAckT).
const maxAckDelay = 200 * time.Millisecond

// scheduleTLP arms the probe timeout while data is in flight, nothing is
// SACKed and no recovery or probe is under way (RFC 8985, section 7.2).
func (c *Conn) scheduleTLP(now int64) {
	if !c.sackOK || c.recov.state != open || c.tlp.active || c.sndUna == c.sndNxt || c.srtt == 0 || c.sackedSegs > 0 {
		c.tlp.at = 0
		return
	}
	pto := 2 * c.srtt
	if c.sent.n == 1 {
		pto = max(pto, c.srtt*3/2+maxAckDelay)
	}
	at := now + int64(max(pto, 10*time.Millisecond))
	if c.rtoAt != 0 && at > c.rtoAt {
		at = c.rtoAt
	}
	c.tlp.at = at
}

// sendTLP sends the loss probe: a new segment if the windows allow, else
// the last segment again.
func (c *Conn) sendTLP(now int64) {
	c.tlp.at = 0
	if !c.sackOK || c.recov.state != open || c.tlp.active || c.sent.n == 0 {
		return
	}
	sent := false
	if int(c.sndNxt-c.bufSeq) < c.sndBuf.n {
		sent = c.sendNew(now)
	}
	c.tlp.retrans = !sent
	if !sent {
		i := c.sent.n - 1
		if c.sent.at(i).flags&segSACKed != 0 {
			return
		}
		c.retransmit(i, now)
		c.recov.undoRetrans--
		c.recov.undoSent--
	}
	c.tlp.active, c.tlp.end = true, c.sndNxt
	c.tlp.at = 0
	c.s.probes.Add(1)
	c.rtoAt = now + int64(c.rto)
}

// tlpAck learns from an ACK what became of the probe (RFC 8985, section
// 7.4): if it resent a segment and the ACK moves past it without a
// D-SACK, the probe repaired a loss, and the window comes down as for one.
func (c *Conn) tlpAck(ev *ackEvent, now int64) {
	t := &c.tlp
	if !t.active || seqLT(c.sndUna, t.end) {
		return
	}
	switch {
	case !t.retrans, ev.dsackTLP:
		t.active = false
	case seqGT(c.sndUna, t.end):
		t.active = false
		c.ssthresh = c.ccCongestion(now)
		c.cwnd = min(c.cwnd, c.ssthresh)
	case !ev.advanced && !ev.sacked:
		t.active = false // a duplicate ACK: both copies arrived
	}
}
