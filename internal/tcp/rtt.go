package tcp

import "time"

// minRTTWindow is how long the minimum RTT is remembered.
const minRTTWindow = 10 * time.Second

// rttSample takes a round-trip sample into the estimate of RFC 6298. Every
// ACK gives one, from the send time of the segment it acknowledges, so
// the gains are divided by the samples a round trip brings (RFC 7323,
// appendix G): the estimate moves per round trip, not per ACK.
func (c *Conn) rttSample(r, now int64) {
	d := time.Duration(max(r, 1))
	c.minRTTSample(int64(d), now)
	if c.srtt == 0 {
		c.srtt, c.rttvar = d, d/2
		return
	}
	n := time.Duration(max(int(c.sndNxt-c.sndUna)/(2*c.mss), 1))
	diff := c.srtt - d
	if diff < 0 {
		diff = -diff
	}
	c.rttvar += (diff - c.rttvar) / (4 * n)
	c.srtt += (d - c.srtt) / (8 * n)
}

// minRTTSample keeps the least RTT of the last minRTTWindow.
func (c *Conn) minRTTSample(r, now int64) {
	d := time.Duration(max(r, 1))
	if c.minRTT == 0 || d <= c.minRTT || now-c.minRTTAt > int64(minRTTWindow) {
		c.minRTT, c.minRTTAt = d, now
	}
}

// updateRTO sets the retransmission timeout from the estimate.
func (c *Conn) updateRTO() {
	if c.srtt == 0 {
		return
	}
	c.rto = min(max(c.srtt+max(4*c.rttvar, time.Millisecond), c.s.cfg.MinRTO), c.s.cfg.MaxRTO)
}
