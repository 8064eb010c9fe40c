package tcp

import "time"

// delayedAck is how long an acknowledgement of a lone segment may wait for
// data to ride on or a second segment to acknowledge with it.
const delayedAck = 20 * time.Millisecond

// armTimer sets the connection's one timer to the earliest of its
// retransmission, delayed-ACK, closing and keep-alive deadlines.
func (c *Conn) armTimer() {
	var next time.Time
	for _, t := range [...]time.Time{c.rtoAt, c.delackAt, c.closeAt, c.kaAt} {
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
	if !c.kaAt.IsZero() && !now.Before(c.kaAt) && c.state != stateClosed {
		c.keepAlive(now)
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
	// Everything is sent again from sndUna; the peer may also have
	// dropped what it SACKed (RFC 2018, section 8).
	c.nsacked = 0
	c.highRxt = c.sndUna
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

// startKeepAlive schedules the first keep-alive check of a connection that
// is open both ways and has keep-alives on.
func (c *Conn) startKeepAlive(now time.Time) {
	if c.kaIdle > 0 && c.kaAt.IsZero() && (c.state == stateEstablished || c.state == stateCloseWait) {
		if c.lastRecv.IsZero() {
			c.lastRecv = now
		}
		c.kaAt = c.lastRecv.Add(c.kaIdle)
		c.armTimer()
	}
}

// keepAlive runs at kaAt: once the peer has been silent for kaIdle it
// sends a probe, a segment one below the oldest unacknowledged sequence
// number that the peer must answer with an ACK, every kaInterval, and
// fails the connection when kaCount probes went unanswered. Any segment
// from the peer resets the count (see input).
func (c *Conn) keepAlive(now time.Time) {
	if c.kaIdle == 0 || (c.state != stateEstablished && c.state != stateCloseWait) {
		c.kaAt = time.Time{}
		return
	}
	if quiet := c.lastRecv.Add(c.kaIdle); c.kaProbes == 0 && now.Before(quiet) {
		c.kaAt = quiet
		return
	}
	c.kaAt = now.Add(c.kaInterval)
	if c.sndUna != c.sndMax {
		// Data is in flight: the retransmission timer watches the peer.
		c.kaProbes = 0
		return
	}
	if c.kaProbes >= c.s.cfg.KeepAliveCount {
		c.abort(ErrTimeout)
		return
	}
	c.kaProbes++
	c.s.keepalives.Add(1)
	c.queueControl(flagACK, c.sndUna-1)
}
