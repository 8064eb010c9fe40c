package tcp

import "time"

// delayedAck is how long an acknowledgement of a lone segment may wait for
// data to ride on or a second segment to acknowledge with it.
const delayedAck = 20 * time.Millisecond

// armTimer sets the connection's one timer to the earliest of its
// deadlines. A timer set to fire earlier is left alone: it finds nothing
// due and sets itself again, which is cheaper than moving the timer for
// every segment.
func (c *Conn) armTimer() {
	next := c.idleDeadline()
	for _, t := range [...]int64{c.rtoAt, c.tlp.at, c.rack.at, c.persistAt, c.delackAt, c.closeAt, c.kaAt, c.paceAt} {
		if t != 0 && (next == 0 || t < next) {
			next = t
		}
	}
	switch {
	case next == 0:
		if c.timerAt != 0 {
			c.timer.Stop()
			c.timerAt = 0
		}
	case c.timerAt == 0 || next < c.timerAt:
		c.timer.Reset(time.Duration(next - c.s.now()))
		c.timerAt = next
	}
}

// onTimer runs when the timer fires.
func (c *Conn) onTimer() {
	c.mu.Lock()
	defer c.unlock()
	c.timerAt = 0
	if c.state == stateClosed {
		return
	}
	now := c.s.now()
	due := func(t int64) bool { return t != 0 && t <= now }
	if due(c.closeAt) {
		c.close()
		return
	}
	if due(c.delackAt) {
		c.sendAck()
	}
	switch {
	case due(c.tlp.at):
		c.sendTLP(now)
	case due(c.rtoAt):
		c.retransmitTimeout(now)
	case due(c.rack.at):
		c.rackTimeout(now)
	}
	if c.state == stateClosed {
		return
	}
	if due(c.persistAt) {
		c.persistProbe(now)
	}
	if due(c.paceAt) {
		c.paceAt = 0
		c.trySend()
	}
	if due(c.kaAt) {
		c.keepAlive(now)
	}
	if t := c.idleDeadline(); due(t) {
		c.shrinkIdle()
		if due(c.idleDeadline()) {
			c.lastData = now // what is left cannot shrink: look again later
		}
	}
	if c.state != stateClosed {
		c.armTimer()
	}
}

// retransmitTimeout handles an expired retransmission timer (RFC 6298,
// section 5): back off, and resend the SYN or, taking everything in
// flight for lost, the oldest data.
func (c *Conn) retransmitTimeout(now int64) {
	c.s.timeouts.Add(1)
	c.rtoAt = 0
	switch c.state {
	case stateSynSent, stateSynReceived:
		c.synTimeout(now)
		return
	}
	if c.sndUna == c.sndNxt {
		return
	}
	if c.rxtStart != 0 && now-c.rxtStart >= int64(c.s.cfg.RetransmitTimeout) {
		c.abort(ErrTimeout)
		return
	}
	c.backoff++
	c.rto = min(c.rto*2, c.s.cfg.MaxRTO)
	if c.sndWnd == 0 {
		// Data went out and the peer closed its window: not a
		// congestion signal. Probe with the first segment.
		c.retransmit(0, now)
	} else {
		c.enterLoss(now)
		c.trySend()
	}
	c.rtoAt = now + int64(c.rto)
}

// synTimeout resends a SYN or SYN-ACK with backoff, and gives up after
// six retries (about two minutes, as Linux), or for a connection from a peer after HalfOpenTimeout.
func (c *Conn) synTimeout(now int64) {
	c.backoff++
	switch {
	case c.state == stateSynSent && c.backoff > c.s.cfg.synRetries:
		c.fail(ErrTimeout)
		return
	case c.state == stateSynReceived && c.listener != nil && now-c.synAt >= int64(c.s.cfg.HalfOpenTimeout):
		c.close() // silently: the peer never completed the handshake
		return
	}
	c.rto = min(c.rto*2, c.s.cfg.MaxRTO)
	c.s.retransmit.Add(1)
	c.sendSYN()
	c.rtoAt = now + int64(c.rto)
	if c.state == stateSynReceived && c.listener != nil {
		c.rtoAt = min(c.rtoAt, c.synAt+int64(c.s.cfg.HalfOpenTimeout))
	}
}

// probeInterval is the time to the next zero-window probe: the
// retransmission timeout, doubled for each unanswered probe.
func (c *Conn) probeInterval() time.Duration {
	return min(c.rto<<min(c.probes, 16), c.s.cfg.MaxRTO)
}

// persistProbe probes a window too small for the data waiting, with a
// segment the peer must answer with its window (one below sndUna, as
// Linux does). Probes never count as loss: the congestion window stays.
// A peer that answers none for RetransmitTimeout is given up.
func (c *Conn) persistProbe(now int64) {
	c.persistAt = 0
	if c.sndUna != c.sndNxt || int(c.sndNxt-c.bufSeq) >= c.sndBuf.n && !(c.finQueued && !c.finSent()) {
		return // data in flight (the timer watches it), or nothing to send
	}
	if c.rxtStart == 0 {
		c.rxtStart = now
	} else if now-c.rxtStart >= int64(c.s.cfg.RetransmitTimeout) {
		c.abort(ErrTimeout)
		return
	}
	c.queueControl(flagACK, c.sndUna-1)
	c.probes++
	c.persistAt = now + int64(c.probeInterval())
}

// startKeepAlive schedules the first keep-alive check of a connection
// that has keep-alives on and may wait for its peer: established, or
// shut down for writing and still reading.
func (c *Conn) startKeepAlive(now int64) {
	if c.kaIdle > 0 && c.kaAt == 0 && c.keepAliveState() {
		if c.lastRecv == 0 {
			c.lastRecv = now
		}
		c.kaAt = c.lastRecv + int64(c.kaIdle)
		c.armTimer()
	}
}

func (c *Conn) keepAliveState() bool {
	switch c.state {
	case stateEstablished, stateCloseWait, stateFinWait2:
		return true
	}
	return false
}

// keepAlive runs at kaAt: once the peer has been silent for kaIdle it
// sends a probe, a segment one below the oldest unacknowledged sequence
// number that the peer must answer with an ACK, every kaInterval, and
// fails the connection when kaCount probes went unanswered. Any segment
// from the peer resets the count (see input).
func (c *Conn) keepAlive(now int64) {
	if c.kaIdle == 0 || !c.keepAliveState() {
		c.kaAt = 0
		return
	}
	if quiet := c.lastRecv + int64(c.kaIdle); c.kaProbes == 0 && now < quiet {
		c.kaAt = quiet
		return
	}
	c.kaAt = now + int64(c.kaInterval)
	if c.sndUna != c.sndNxt {
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
