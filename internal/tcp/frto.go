package tcp

// F-RTO (RFC 5682, with SACK, as Linux runs it) tells a spurious
// retransmission timeout, one that a delay rather than a loss set off,
// from a real one. The timeout resends the first segment only. If the
// first ACK after it moves the acknowledgement on, that may be the
// retransmission's doing or the original's, so new data goes out instead
// of the other segments taken for lost, and the next ACKs tell: once
// an ACK or SACK covers a segment sent only once, the segments were
// delayed, not lost, and the timeout is undone at once; a duplicate ACK,
// or a SACK of the new data alone, shows the loss was real, and recovery
// goes on from the timeout as usual.

// frtoAck runs F-RTO's steps for an ACK after a timeout.
func (c *Conn) frtoAck(ev *ackEvent) {
	r := &c.recov
	r.frtoNew = false
	if !r.frto || r.state != inLoss {
		return
	}
	switch {
	case ev.late:
		// Data sent once only was delivered after all.
		c.undo()
	case ev.advanced && c.sndNxt == r.recover:
		// Step 2: probe with new data, if there is any and the peer's
		// window takes it; without, F-RTO cannot tell.
		r.frtoNew = int(c.sndNxt-c.bufSeq) < c.sndBuf.n && seqGT(c.sndUna+c.sndWnd, c.sndNxt)
		r.frto = r.frtoNew
	case seqGT(c.sndNxt, r.recover) && (ev.sacked || !ev.advanced):
		r.frto = false // the loss was real
	}
}
