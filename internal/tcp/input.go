package tcp

// input handles a segment of this connection (RFC 9293, section 3.10.7).
func (c *Conn) input(sg *segment) {
	c.mu.Lock()
	now := c.s.now()
	c.lastRecv, c.kaProbes = now, 0
	switch c.state {
	case stateClosed:
	case stateSynSent:
		c.inputSynSent(sg)
	default:
		c.inputSynchronized(sg)
	}
	if c.state != stateClosed {
		c.startKeepAlive(now)
		c.armTimer()
	}
	c.unlock()
}

// synOptions applies the options of the peer's SYN.
func (c *Conn) synOptions(sg *segment) {
	c.mss = c.s.mss(c.id.local.Addr())
	if sg.mss != 0 {
		c.mss = min(c.mss, int(sg.mss))
	}
	c.mss = max(c.mss, 64)
	c.sackOK = sg.sackOK
	if sg.wscale >= 0 && c.offerWScale {
		c.sndShift = uint8(sg.wscale)
	} else {
		c.sndShift, c.offerWScale = 0, false
	}
	c.cwnd = initialWindow(c.mss)
	c.rcvSpace = c.initialRcvSpace()
}

// rcvShift is the scale of the windows this connection advertises.
func (c *Conn) rcvShift() uint8 {
	if !c.offerWScale {
		return 0
	}
	return c.s.shift
}

// acceptSYN starts a passive open from the SYN sg.
func (c *Conn) acceptSYN(sg *segment) {
	c.state = stateSynReceived
	c.irs, c.rcvNxt = sg.seq, sg.seq+1
	c.offerWScale = sg.wscale >= 0
	c.synOptions(sg)
	c.sndWnd = uint32(sg.wnd)
	c.sndWl1, c.sndWl2 = sg.seq, 0
	c.sendSYN()
}

func (c *Conn) inputSynSent(sg *segment) {
	ackOK := false
	if sg.has(flagACK) {
		if seqLEQ(sg.ack, c.iss) || seqGT(sg.ack, c.sndNxt) {
			if !sg.has(flagRST) {
				c.queueControl(flagRST, sg.ack)
			}
			return
		}
		ackOK = true
	}
	if sg.has(flagRST) {
		if ackOK {
			c.fail(ErrRefused)
		}
		return
	}
	if !sg.has(flagSYN) {
		return
	}
	c.irs, c.rcvNxt = sg.seq, sg.seq+1
	c.synOptions(sg)
	c.sndWnd = uint32(sg.wnd) // never scaled in a SYN
	c.sndWl1, c.sndWl2 = sg.seq, sg.ack
	if !ackOK {
		// Simultaneous open: both sides sent a SYN. Answer with a
		// SYN-ACK; the peer's SYN-ACK or ACK completes the handshake.
		c.state = stateSynReceived
		c.sendSYN()
		return
	}
	c.sndUna = sg.ack
	c.synRTT()
	c.state = stateEstablished
	c.reserveBuffers()
	c.sendAck()
	c.wake()
}

// synRTT takes the handshake's round trip as the first RTT sample, unless
// the SYN was sent more than once.
func (c *Conn) synRTT() {
	now := c.s.now()
	if c.backoff == 0 {
		c.rttSample(now-c.synAt, now)
	}
	c.backoff, c.rtoAt, c.rxtStart = 0, 0, 0
	c.updateRTO()
}

// acceptable reports whether a segment at seq occupying n sequence
// numbers overlaps the receive window (RFC 9293, section 3.10.7.4).
func (c *Conn) acceptable(seq, n, wnd uint32) bool {
	in := func(s uint32) bool { return seqLEQ(c.rcvNxt, s) && seqLT(s, c.rcvNxt+wnd) }
	switch {
	case n == 0 && wnd == 0:
		return seq == c.rcvNxt
	case n == 0:
		return in(seq)
	case wnd == 0:
		return false
	}
	return in(seq) || in(seq+n-1)
}

func (c *Conn) inputSynchronized(sg *segment) {
	wnd := uint32(c.acceptWindow())
	if !c.acceptable(sg.seq, sg.len(), wnd) {
		switch {
		case wnd == 0 && sg.seq == c.rcvNxt && !sg.has(flagSYN|flagRST):
			// Data into a zero window: take the ACK, not the data, and
			// answer with the window. A bare FIN fits, as in Linux.
			if len(sg.payload) > 0 {
				sg.payload, sg.flags = nil, sg.flags&^flagFIN
			}
			c.ackNow = true
		case c.state == stateSynReceived && sg.has(flagSYN|flagACK) && sg.seq == c.irs && c.listener == nil:
			// The peer's SYN-ACK in a simultaneous open: its ACK
			// completes the handshake.
			sg.flags &^= flagSYN
			sg.seq++
		default:
			if !sg.has(flagRST) {
				c.sendAckLimited()
			}
			if len(sg.payload) > 0 && seqLT(sg.seq, c.rcvNxt) {
				c.noteDuplicate(sg.seq, sg.seq+uint32(len(sg.payload)))
			}
			return
		}
	}
	if sg.has(flagRST) {
		switch {
		case sg.seq != c.rcvNxt:
			c.sendAckLimited() // challenge ACK (RFC 5961)
		case c.state == stateSynReceived && c.listener != nil:
			c.close() // back to LISTEN, which the listener still is
		default:
			c.fail(ErrReset)
		}
		return
	}
	if sg.has(flagSYN) {
		c.sendAckLimited() // challenge ACK
		return
	}
	if !sg.has(flagACK) {
		return
	}
	if c.state == stateSynReceived {
		if seqLEQ(sg.ack, c.sndUna) || seqGT(sg.ack, c.sndNxt) {
			c.queueControl(flagRST, sg.ack)
			return
		}
		if c.listener != nil && c.listener.full() {
			return // the handshake waits for room in the backlog
		}
		c.establish(sg)
		if c.state == stateClosed {
			return
		}
	}
	if !c.processAck(sg) || c.state == stateClosed {
		return
	}
	c.trimToWindow(sg)
	if len(sg.payload) > 0 {
		switch c.state {
		case stateEstablished, stateFinWait1, stateFinWait2:
			if c.userClosed {
				// Nobody will read it.
				c.abort(ErrAborted)
				return
			}
			c.receive(sg)
		}
	}
	if sg.has(flagFIN) {
		c.receiveFIN(sg.seq + uint32(len(sg.payload)))
		if c.state == stateClosed {
			return
		}
	}
	if c.quickAck {
		// A bare ACK, before any data: the sender counts only those as
		// duplicates for fast retransmit.
		c.quickAck = false
		c.sendAck()
	}
	c.trySend()
	switch {
	case c.ackDue():
		c.sendAck()
	case c.unacked > 0 && c.delackAt == 0:
		c.delackAt = c.s.now() + int64(delayedAck)
	}
}

// ackDue reports whether the segments received call for an ACK now: one
// that must go at once (a duplicate, a FIN, a zero window), or every
// second segment while the application keeps up with the data. Once the
// reader has fallen behind by more than a few segments (ackLag), so that
// the window to advertise is smaller than the last one, the
// application's next read sends the ACK (consumed), or the delayed-ACK
// timer if it does not read, as in Linux. ACKs then follow the reads: a
// receiver that takes segments in faster than its reader sends one ACK
// per read, from the reader's goroutine, rather than one per two segments
// from the goroutine that takes packets in. A reader that keeps up within
// a few segments is not made to wait for: its ACKs would carry the delay
// of waking it, which the sender takes for a longer round trip.
func (c *Conn) ackDue() bool {
	return c.ackNow || c.unacked >= 2 && (c.rcvBuf.n <= ackLag*c.mss || c.rcvWindow() >= c.advWnd)
}

// ackLag is how many segments the reader may fall behind before ACKs wait
// for its reads.
const ackLag = 4

// establish completes a passive open, or a simultaneous one.
func (c *Conn) establish(sg *segment) {
	c.state = stateEstablished
	c.sndWnd = uint32(sg.wnd) << c.sndShift
	c.sndWl1, c.sndWl2 = sg.seq, sg.ack
	c.synRTT()
	c.reserveBuffers()
	if c.listener != nil && !c.listener.enqueue(c) {
		c.abort(ErrAborted)
		return
	}
	c.wake()
}

// trimToWindow cuts data before rcvNxt and beyond the window off sg.
func (c *Conn) trimToWindow(sg *segment) {
	if d := c.rcvNxt - sg.seq; seqLT(sg.seq, c.rcvNxt) {
		if int(d) > len(sg.payload) {
			// Everything is old, the FIN too if any.
			if len(sg.payload) > 0 {
				c.noteDuplicate(sg.seq, sg.seq+uint32(len(sg.payload)))
			}
			sg.payload, sg.flags = nil, sg.flags&^flagFIN
			c.ackNow = true // acknowledge the duplicate at once
			return
		}
		if d > 0 {
			c.noteDuplicate(sg.seq, c.rcvNxt)
		}
		sg.payload = sg.payload[d:]
		sg.seq = c.rcvNxt
	}
	wnd := c.acceptWindow()
	off := int(sg.seq - c.rcvNxt)
	if off+len(sg.payload) > wnd {
		sg.payload = sg.payload[:max(wnd-off, 0)]
		sg.flags &^= flagFIN
	}
}
