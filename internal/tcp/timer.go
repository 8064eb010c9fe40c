package tcp

import "time"

// delayedAck is how long an acknowledgement of a lone segment may wait for
// data to ride on or a second segment to acknowledge with it.
const delayedAck = 20 * time.Millisecond

// armTimer sets the connection's one timer to the earliest of its
// retransmission, delayed-ACK and closing deadlines.
func (c *Conn) armTimer() {
	var next time.Time
	for _, t := range [...]time.Time{c.rtoAt, c.delackAt, c.closeAt} {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	if next.IsZero() {
		c.timer.Stop()
		return
	}
	c.timer.Reset(time.Until(next))
}

// onTimer runs when the timer fires.
func (c *Conn) onTimer() {
	c.mu.Lock()
	defer c.unlock()
	if c.state == stateClosed {
		return
	}
	now := time.Now()
	if !c.closeAt.IsZero() && !now.Before(c.closeAt) {
		c.close()
		return
	}
	if !c.delackAt.IsZero() && !now.Before(c.delackAt) {
		c.sendAck()
	}
	if !c.rtoAt.IsZero() && !now.Before(c.rtoAt) {
		c.retransmitTimeout()
	}
	if c.state != stateClosed {
		c.armTimer()
	}
}

// retransmitTimeout handles an expired retransmission timer (RFC 6298,
// section 5; RFC 5681, section 3.1): back off, shrink the congestion
// window to one segment and send again from the oldest unacknowledged
// byte.
func (c *Conn) retransmitTimeout() {
	c.s.timeouts.Add(1)
	c.retries++
	if c.retries > c.s.cfg.MaxRetries {
		if c.state == stateSynSent {
			c.fail(ErrTimeout)
		} else {
			c.abort(ErrTimeout)
		}
		return
	}
	c.rto = min(c.rto*2, c.s.cfg.MaxRTO)
	c.timing = false
	c.rtoAt = time.Now().Add(c.rto)
	c.s.retransmit.Add(1)
	if c.state == stateSynSent || c.state == stateSynReceived {
		c.sndNxt = c.iss
		c.sendSYN()
		return
	}
	if c.sndUna == c.sndMax {
		c.rtoAt = time.Time{}
		return
	}
	flight := int(c.sndMax - c.sndUna)
	c.ssthresh = max(flight/2, 2*c.mss)
	c.cwnd = c.mss
	c.inRecovery = false
	c.dupAcks = 0
	c.recover = c.sndMax
	c.sndNxt = c.sndUna
	c.trySend()
}

// updateRTT takes a round-trip sample into the estimate (RFC 6298,
// section 2).
func (c *Conn) updateRTT(r time.Duration) {
	if c.srtt == 0 {
		c.srtt, c.rttvar = r, r/2
	} else {
		d := c.srtt - r
		if d < 0 {
			d = -d
		}
		c.rttvar = (3*c.rttvar + d) / 4
		c.srtt = (7*c.srtt + r) / 8
	}
	c.rto = min(max(c.srtt+max(4*c.rttvar, time.Millisecond), c.s.cfg.MinRTO), c.s.cfg.MaxRTO)
}
