package tcp

import "time"

// ackEvent is what one incoming ACK told the sender.
type ackEvent struct {
	advanced  bool  // the cumulative acknowledgement moved
	sacked    bool  // new data was SACKed
	dsack     bool  // it carried a D-SACK block (RFC 2883)
	dsackTLP  bool  // ... for the tail loss probe's retransmission
	late      bool  // a segment taken for lost arrived without being resent
	finAcked  bool  // our FIN is acknowledged
	rttFrom   int64 // send time of the oldest newly acknowledged segment never resent
	newest    int64 // send time of the latest delivered segment with an unambiguous RTT
	newestRTT int64
}

// processAck handles the acknowledgement, SACK blocks and window of sg.
// It returns false if the segment is to be dropped.
func (c *Conn) processAck(sg *segment) bool {
	ack := sg.ack
	if seqGT(ack, c.sndNxt) {
		c.sendAckLimited()
		return false
	}
	if seqLT(ack, c.sndUna) {
		return true // an old duplicate: its data may still be new
	}
	now := c.s.now()
	oldWnd := c.sndWnd
	if seqLT(c.sndWl1, sg.seq) || c.sndWl1 == sg.seq && seqLEQ(c.sndWl2, ack) {
		c.sndWnd = uint32(sg.wnd) << c.sndShift
		c.sndWl1, c.sndWl2 = sg.seq, ack
	}
	if c.sndUna == c.sndNxt {
		// Nothing in flight: the peer answered, to a probe perhaps.
		c.rxtStart = 0
	}
	prevUna, sackedBefore := c.sndUna, c.sackedOut
	var ev ackEvent
	if c.sackOK && sg.nsacks > 0 {
		c.processSACKs(sg, &ev, now)
	}
	if seqGT(ack, c.sndUna) {
		c.ackUpTo(ack, &ev, now)
	} else if len(sg.payload) == 0 && !sg.has(flagFIN) && c.sndWnd == oldWnd && c.sndUna != c.sndNxt {
		c.dupAcks++
	}
	delivered := int(c.sndUna-prevUna) + c.sackedOut - sackedBefore
	c.onAck(prevUna, delivered, &ev, now)
	return c.state != stateClosed
}

// ackUpTo takes the cumulative acknowledgement ack: it forgets the
// segments and the buffered data it covers.
func (c *Conn) ackUpTo(ack uint32, ev *ackEvent, now int64) {
	for c.sent.n > 0 {
		s := c.sent.at(0)
		if seqLEQ(s.end(), ack) {
			if s.flags&segSACKed == 0 {
				c.delivered(s, ev, now)
			}
			ev.late = ev.late || s.flags&(segLost|segEverRetrans) == segLost
			if s.flags&segEverRetrans == 0 && ev.rttFrom == 0 {
				ev.rttFrom = s.xmit
			}
			if s.flags&segFIN != 0 {
				ev.finAcked = true
			}
			c.forget()
			continue
		}
		if seqGT(ack, s.seq) {
			c.trimFront(s, int(ack-s.seq))
		}
		break
	}
	if d := int(ack - c.bufSeq); seqGT(ack, c.bufSeq) {
		d = min(d, c.sndBuf.n)
		c.sndBuf.discard(d)
		c.bufSeq += uint32(d)
		if c.sndBuf.n == 0 {
			c.sndBuf.release()
		}
	}
	c.sndUna = ack
	c.dupAcks = 0
	c.rxtStart = 0
	ev.advanced = true
	c.sndCond.Broadcast()
}

// processSACKs marks the segments the SACK blocks of sg cover (RFC 2018)
// and notes a D-SACK (RFC 2883): a first block below the acknowledgement
// or inside the second block reports data that arrived twice.
func (c *Conn) processSACKs(sg *segment, ev *ackEvent, now int64) {
	for i, r := range sg.sacks[:sg.nsacks] {
		if !seqLT(r.start, r.end) || seqGT(r.end, c.sndNxt) {
			continue // empty or beyond what was sent: ignore
		}
		if i == 0 && (seqLEQ(r.end, sg.ack) || sg.nsacks > 1 && seqLEQ(sg.sacks[1].start, r.start) && seqLEQ(r.end, sg.sacks[1].end)) {
			c.noteDSACK(r, ev)
			continue
		}
		start := seqMax(r.start, c.sndUna)
		if !seqLT(start, r.end) {
			continue
		}
		for j := c.sent.search(start); j < c.sent.n; j++ {
			s := c.sent.at(j)
			if !seqLT(s.seq, r.end) || seqGT(s.end(), r.end) {
				break
			}
			if seqLT(s.seq, start) || s.flags&segSACKed != 0 {
				continue // reported in part only, or already
			}
			ev.late = ev.late || s.flags&(segLost|segEverRetrans) == segLost
			c.setFlag(s, segSACKed)
			c.delivered(s, ev, now)
			ev.sacked = true
		}
	}
}

// noteDSACK takes a D-SACK of r: the peer got that data twice, so a
// retransmission of it was not needed (or the network duplicated it).
func (c *Conn) noteDSACK(r seqRange, ev *ackEvent) {
	ev.dsack = true
	if c.tlp.active && c.tlp.retrans && r.end == c.tlp.end {
		ev.dsackTLP = true
		return
	}
	c.recov.undoRetrans -= max(int(r.end-r.start+uint32(c.mss)-1)/c.mss, 1)
}

// delivered updates RACK (RFC 8985, section 6.2) for segment s, which the
// peer has now, cumulatively or by SACK.
func (c *Conn) delivered(s *sentSeg, ev *ackEvent, now int64) {
	end := s.end()
	if seqGT(end, c.rack.fack) || !c.rack.valid {
		c.rack.fack = end
	} else if s.flags&segEverRetrans == 0 && seqLT(end, c.rack.fack) {
		c.rack.reordering = true // delivered after later data, never resent
	}
	rtt := now - s.xmit
	if s.flags&segEverRetrans != 0 && (rtt < int64(c.minRTT) || c.recov.frto) {
		// May be the first transmission's delivery: too soon for the
		// retransmission's, or F-RTO has yet to tell.
		return
	}
	if s.xmit >= ev.newest {
		ev.newest, ev.newestRTT = s.xmit, rtt
	}
	if !c.rack.valid || sentAfter(s.xmit, end, c.rack.xmit, c.rack.end) {
		c.rack.valid = true
		c.rack.xmit, c.rack.end = s.xmit, end
	}
}

// onAck follows an ACK: RTT, loss detection, the congestion state, the
// timers and the close states.
func (c *Conn) onAck(prevUna uint32, delivered int, ev *ackEvent, now int64) {
	if ev.rttFrom != 0 {
		c.rttSample(now-ev.rttFrom, now)
		c.backoff = 0
		c.updateRTO()
	}
	if ev.newest != 0 {
		c.rack.rtt = ev.newestRTT
		if ev.rttFrom == 0 {
			c.minRTTSample(ev.newestRTT, now)
		}
	}
	c.tlpAck(ev, now)
	if ev.dsack {
		c.rackDSACK()
	}
	if ev.late && c.recov.state != inLoss {
		// After a timeout every segment in flight is taken for lost:
		// one that arrives shows a delay (F-RTO), not reordering.
		c.rack.reordering = true
	}
	c.frtoAck(ev)
	if ev.dsack || ev.late {
		c.tryUndo(ev.late)
	}
	if c.sackOK {
		c.rackDetectLoss(now)
	} else {
		c.dupAckLoss(prevUna)
	}
	c.updateRecovery(prevUna, delivered, time.Duration(ev.newestRTT), now)
	switch {
	case c.sndUna == c.sndNxt:
		c.rtoAt, c.rack.at, c.tlp.at = 0, 0, 0
	case ev.advanced:
		c.rtoAt = now + int64(c.rto)
	}
	c.scheduleTLP(now)
	if ev.advanced {
		c.noteData(now)
		c.sizeSend()
	}
	if !ev.finAcked {
		return
	}
	switch c.state {
	case stateFinWait1:
		c.state = stateFinWait2
		if c.userClosed {
			c.closeAt = now + int64(c.s.cfg.FinWait2Timeout)
		}
	case stateClosing:
		c.enterTimeWait()
	case stateLastAck:
		c.close()
	}
}
