package tcp

// receive stores the data of sg, trimmed to the window, in order or ahead.
func (c *Conn) receive(sg *segment) {
	off := int(sg.seq - c.rcvNxt)
	n := len(sg.payload)
	now := c.s.now()
	c.noteData(now)
	if off == 0 {
		c.rcvBuf.write(sg.payload)
		c.rcvNxt += uint32(n)
		c.unacked++
		c.rcvRTTMeasure(now)
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
	start, end := sg.seq, sg.seq+uint32(n)
	for _, r := range c.ooo[:c.nooo] {
		if seqLEQ(r.start, start) && seqLEQ(end, r.end) {
			c.noteDuplicate(start, end)
			break
		}
	}
	if c.addRange(start, end) {
		c.rcvBuf.writeAt(c.rcvBuf.n+off, sg.payload)
	}
	c.quickAck = true // a duplicate ACK, for the sender's fast retransmit
}

// noteDuplicate reports [start, end), data that arrived again, in the
// next ACK's first SACK block (a D-SACK, RFC 2883): the sender learns that
// its retransmission was not needed.
func (c *Conn) noteDuplicate(start, end uint32) {
	c.dsack = seqRange{start, end}
	c.dsackPending = c.sackOK
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
		r.start, r.end = seqMin(r.start, o.start), seqMax(r.end, o.end)
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
		c.ackNow = true
		return
	}
	if c.finRcvd {
		c.ackNow = true
		return
	}
	c.finRcvd = true
	c.rcvNxt++
	c.ackNow = true
	c.rcvCond.Broadcast()
	switch c.state {
	case stateSynReceived, stateEstablished:
		c.state = stateCloseWait
	case stateFinWait1:
		c.state = stateClosing
	case stateFinWait2:
		c.sendAck()
		c.enterTimeWait()
	}
}

// enterTimeWait hands the four-tuple to the stack's TIME-WAIT table and
// closes the connection; data not read yet stays readable.
func (c *Conn) enterTimeWait() {
	s := c.s
	s.mu.Lock()
	s.tw.add(c.id, c.sndNxt, c.rcvNxt)
	s.mu.Unlock()
	c.close()
}
