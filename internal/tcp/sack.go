package tcp

// Loss recovery with SACK (RFC 6675, simplified). During fast recovery
// NewReno alone learns of one lost segment per round trip, from each
// partial acknowledgement. The peer's SACK blocks tell which data beyond
// the first hole arrived, so every hole can be resent within one round
// trip: each duplicate ACK of the recovery lets out the retransmission of
// the next hole not yet resent. Data above the highest SACKed byte is not
// taken to be lost; the retransmission timer covers lost retransmissions.

// maxScoreboard bounds the SACKed ranges a connection remembers; beyond
// it the highest are forgotten, which only delays their holes to NewReno.
const maxScoreboard = 8

// noteSACKs merges the valid SACK blocks of sg into the scoreboard.
func (c *Conn) noteSACKs(sg *segment) {
	for _, r := range sg.sacks[:sg.nsacks] {
		if seqLT(r.start, c.sndUna) {
			r.start = c.sndUna
		}
		if !seqLT(r.start, r.end) || seqGT(r.end, c.sndMax) {
			continue // empty, old, or beyond what was sent: ignore
		}
		c.addSACKed(r)
	}
}

// addSACKed inserts r into the sorted, disjoint scoreboard.
func (c *Conn) addSACKed(r seqRange) {
	// Absorb every range that overlaps or touches r.
	n := 0
	for _, x := range c.sacked[:c.nsacked] {
		if seqLEQ(x.start, r.end) && seqLEQ(r.start, x.end) {
			r.start, r.end = seqMin(r.start, x.start), seqMax(r.end, x.end)
			continue
		}
		c.sacked[n] = x
		n++
	}
	// Insert r in order; if the board is full, the highest range goes.
	i := 0
	for i < n && seqLT(c.sacked[i].start, r.start) {
		i++
	}
	if n == maxScoreboard {
		if i == n {
			c.nsacked = n
			return
		}
		n--
	}
	copy(c.sacked[i+1:n+1], c.sacked[i:n])
	c.sacked[i] = r
	c.nsacked = n + 1
}

// pruneSACKed drops what the cumulative acknowledgement now covers.
func (c *Conn) pruneSACKed() {
	n := 0
	for _, x := range c.sacked[:c.nsacked] {
		if seqLEQ(x.end, c.sndUna) {
			continue
		}
		if seqLT(x.start, c.sndUna) {
			x.start = c.sndUna
		}
		c.sacked[n] = x
		n++
	}
	c.nsacked = n
}

// nextHole returns the first byte range at or after from that was sent,
// is not SACKed, and lies below a SACKed range: data the peer is missing
// while later data arrived. n is at most one MSS.
func (c *Conn) nextHole(from uint32) (seq uint32, n int, ok bool) {
	seq = seqMax(from, c.sndUna)
	for _, x := range c.sacked[:c.nsacked] {
		if seqLT(seq, x.start) {
			return seq, min(int(x.start-seq), c.mss), true
		}
		seq = seqMax(seq, x.end)
	}
	return 0, 0, false
}

// retransmitHole resends the next hole of the recovery that was not
// resent yet, and reports whether it sent one.
func (c *Conn) retransmitHole() bool {
	seq, n, ok := c.nextHole(c.highRxt)
	if !ok {
		return false
	}
	off := int(seq - c.bufSeq)
	n = min(n, c.sndBuf.n-off)
	if off < 0 || n <= 0 {
		return false
	}
	c.s.retransmit.Add(1)
	c.timing = false
	c.sendData(seq, off, n, false)
	c.highRxt = seq + uint32(n)
	return true
}
