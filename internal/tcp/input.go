package tcp

import "time"

// input handles a segment of this connection (RFC 9293, section 3.10.7).
func (c *Conn) input(sg *segment) {
	c.mu.Lock()
	now := time.Now()
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
		c.sndShift, c.rcvShift, c.offerWScale = 0, 0, false
	}
	c.cwnd = 10 * c.mss // RFC 6928
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
		if seqLEQ(sg.ack, c.iss) || seqGT(sg.ack, c.sndMax) {
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
		// Simultaneous open.
		c.state = stateSynReceived
		c.sndNxt = c.iss
		c.sendSYN()
		return
	}
	c.sndUna = sg.ack
	if c.timing && c.retries == 0 {
		c.updateRTT(time.Since(c.rttStart))
	}
	c.timing, c.retries, c.rtoAt = false, 0, time.Time{}
	c.state = stateEstablished
	c.sendAck()
	c.wake()
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
	wnd := uint32(c.rcvBuf.free())
	if !c.acceptable(sg.seq, sg.len(), wnd) {
		if wnd == 0 && sg.seq == c.rcvNxt && !sg.has(flagSYN|flagRST) {
			// A zero-window probe: take its ACK, not its data,
			// and answer with the window.
			sg.payload, sg.flags = nil, sg.flags&^flagFIN
			c.unacked = 2
		} else {
			if !sg.has(flagRST) {
				c.sendAckLimited()
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
		if seqLEQ(sg.ack, c.sndUna) || seqGT(sg.ack, c.sndMax) {
			c.queueControl(flagRST, sg.ack)
			return
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
	}
	if c.quickAck {
		// A bare ACK, before any data: the sender counts only those as
		// duplicates for fast retransmit.
		c.quickAck = false
		c.sendAck()
	}
	c.trySend()
	if c.unacked >= 2 {
		c.sendAck()
	} else if c.unacked == 1 && c.delackAt.IsZero() {
		c.delackAt = time.Now().Add(delayedAck)
	}
}

// establish completes a passive open.
func (c *Conn) establish(sg *segment) {
	c.state = stateEstablished
	c.sndWnd = uint32(sg.wnd) << c.sndShift
	c.sndWl1, c.sndWl2 = sg.seq, sg.ack
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
			sg.payload, sg.flags = nil, sg.flags&^flagFIN
			c.unacked = 2 // acknowledge the duplicate at once
			return
		}
		sg.payload = sg.payload[d:]
		sg.seq = c.rcvNxt
	}
	wnd := c.rcvBuf.free()
	off := int(sg.seq - c.rcvNxt)
	if off+len(sg.payload) > wnd {
		sg.payload = sg.payload[:max(wnd-off, 0)]
		sg.flags &^= flagFIN
	}
}

// processAck handles the acknowledgement and window of sg. It returns
// false if the segment is to be dropped.
func (c *Conn) processAck(sg *segment) bool {
	ack := sg.ack
	if seqGT(ack, c.sndMax) {
		c.sendAckLimited()
		return false
	}
	if seqLT(ack, c.sndUna) {
		return true // an old duplicate: its data may still be new
	}
	if c.sackOK && sg.nsacks > 0 {
		c.noteSACKs(sg)
	}
	oldWnd := c.sndWnd
	if seqLT(c.sndWl1, sg.seq) || c.sndWl1 == sg.seq && seqLEQ(c.sndWl2, ack) {
		c.sndWnd = uint32(sg.wnd) << c.sndShift
		c.sndWl1, c.sndWl2 = sg.seq, ack
	}
	if oldWnd == 0 && c.sndWnd > 0 && seqGT(c.sndNxt, c.sndUna) {
		// The window opened: resend the probe byte the peer dropped.
		c.sndNxt = c.sndUna
	}
	if ack == c.sndUna {
		if c.sndWnd == 0 && !c.userClosed {
			// The peer answers our probes. A closed connection
			// nobody waits on gives up after MaxRetries instead.
			c.retries = 0
		}
		if len(sg.payload) == 0 && !sg.has(flagFIN) && c.sndWnd == oldWnd && c.sndUna != c.sndMax {
			c.duplicateAck()
		}
		return true
	}
	c.newAck(ack)
	return c.state != stateClosed
}

// newAck handles an acknowledgement of new data.
func (c *Conn) newAck(ack uint32) {
	acked := int(ack - c.sndUna)
	finAcked := c.finSent() && ack == c.finSeq()+1
	if c.timing && seqGEQ(ack, c.rttSeq) {
		c.updateRTT(time.Since(c.rttStart))
		c.timing = false
	}
	c.retries = 0
	if d := int(ack - c.bufSeq); seqGT(ack, c.bufSeq) {
		d = min(d, c.sndBuf.n)
		c.sndBuf.discard(d)
		c.bufSeq += uint32(d)
	}
	c.sndUna = ack
	c.pruneSACKed()
	if seqLT(c.sndNxt, ack) {
		c.sndNxt = ack
	}
	c.congestionAck(ack, acked)
	if c.sndUna == c.sndMax {
		c.rtoAt = time.Time{}
	} else {
		c.rtoAt = time.Now().Add(c.rto)
	}
	c.sndCond.Broadcast()
	if !finAcked {
		return
	}
	switch c.state {
	case stateFinWait1:
		c.state = stateFinWait2
		if c.userClosed {
			c.closeAt = time.Now().Add(c.s.cfg.FinWait2Timeout)
		}
	case stateClosing:
		c.enterTimeWait()
	case stateLastAck:
		c.close()
	}
}

// congestionAck grows the congestion window for acked new bytes, or
// leaves fast recovery (RFC 5681, RFC 6582).
func (c *Conn) congestionAck(ack uint32, acked int) {
	c.dupAcks = 0
	switch {
	case c.inRecovery && seqGEQ(ack, c.recover):
		c.inRecovery = false
		c.cwnd = min(c.ssthresh, int(c.sndMax-c.sndUna)+c.mss)
	case c.inRecovery:
		// A partial ACK: the next hole was lost too. With SACK it may
		// have been resent already, and the next one not yet.
		if seqGT(c.highRxt, c.sndUna) && c.nsacked > 0 {
			c.retransmitHole()
		} else {
			c.retransmitFirst()
		}
		c.cwnd = max(c.cwnd-acked+c.mss, c.mss)
	case c.cwnd < c.ssthresh:
		c.cwnd += min(acked, c.mss)
	default:
		c.cwnd += max(c.mss*c.mss/c.cwnd, 1)
	}
	c.cwnd = min(c.cwnd, 2*c.sndBuf.size())
}

// duplicateAck counts a duplicate ACK; the third starts fast retransmit.
func (c *Conn) duplicateAck() {
	c.dupAcks++
	switch {
	case c.inRecovery:
		// Each duplicate ACK means a segment left the network: it
		// lets out the next hole's retransmission, or new data.
		if !c.retransmitHole() {
			c.cwnd += c.mss
		}
	case c.dupAcks == 3 && seqGT(c.sndUna, c.recover):
		flight := int(c.sndMax - c.sndUna)
		c.ssthresh = max(flight/2, 2*c.mss)
		c.cwnd = c.ssthresh + 3*c.mss
		c.recover = c.sndMax
		c.inRecovery = true
		c.highRxt = c.sndUna
		c.retransmitFirst()
	}
	c.trySend()
}

// receive stores the data of sg, trimmed to the window, in order or ahead.
func (c *Conn) receive(sg *segment) {
	off := int(sg.seq - c.rcvNxt)
	n := len(sg.payload)
	if off == 0 {
		c.rcvBuf.write(sg.payload)
		c.rcvNxt += uint32(n)
		c.unacked++
		if c.nooo > 0 {
			c.takeAhead()
			c.quickAck = true // a hole filled: tell the sender at once
		}
		if c.oooFin && c.rcvNxt == c.oooFinSeq {
			c.oooFin = false
			c.receiveFIN(c.rcvNxt)
		}
		c.rcvCond.Broadcast()
		return
	}
	if c.addRange(sg.seq, sg.seq+uint32(n)) {
		c.rcvBuf.writeAt(c.rcvBuf.n+off, sg.payload)
	}
	c.quickAck = true // a duplicate ACK, for the sender's fast retransmit
}

// addRange records out-of-order data [start, end), merging it with the
// ranges it touches, and puts it first, as the SACK block of the latest
// segment must be. It reports false if there are too many ranges.
func (c *Conn) addRange(start, end uint32) bool {
	r := seqRange{start, end}
	var keep [maxRanges]seqRange
	k := 0
	for _, o := range c.ooo[:c.nooo] {
		if seqLT(o.end, r.start) || seqGT(o.start, r.end) {
			keep[k] = o
			k++
			continue
		}
		if seqLT(o.start, r.start) {
			r.start = o.start
		}
		if seqGT(o.end, r.end) {
			r.end = o.end
		}
	}
	if k == maxRanges {
		return false
	}
	c.ooo[0] = r
	copy(c.ooo[1:], keep[:k])
	c.nooo = k + 1
	return true
}

// takeAhead moves out-of-order data that now follows rcvNxt into the
// in-order data.
func (c *Conn) takeAhead() {
	for moved := true; moved; {
		moved = false
		for i := 0; i < c.nooo; i++ {
			r := c.ooo[i]
			if seqGT(r.start, c.rcvNxt) {
				continue
			}
			if seqGT(r.end, c.rcvNxt) {
				c.rcvBuf.extend(int(r.end - c.rcvNxt))
				c.rcvNxt = r.end
			}
			copy(c.ooo[i:], c.ooo[i+1:c.nooo])
			c.nooo--
			moved = true
			break
		}
	}
}

// receiveFIN handles the peer's FIN at seq.
func (c *Conn) receiveFIN(seq uint32) {
	if seq != c.rcvNxt {
		if seqGT(seq, c.rcvNxt) {
			c.oooFin, c.oooFinSeq = true, seq
		}
		c.unacked = 2
		return
	}
	if c.finRcvd {
		c.unacked = 2
		return
	}
	c.finRcvd = true
	c.rcvNxt++
	c.unacked = 2
	c.rcvCond.Broadcast()
	switch c.state {
	case stateSynReceived, stateEstablished:
		c.state = stateCloseWait
	case stateFinWait1:
		c.state = stateClosing
	case stateFinWait2:
		c.enterTimeWait()
	}
}

func (c *Conn) enterTimeWait() {
	c.state = stateTimeWait
	c.rtoAt, c.delackAt = time.Time{}, time.Time{}
	c.closeAt = time.Now().Add(c.s.cfg.TimeWait)
}
