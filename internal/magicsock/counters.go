package magicsock

import "sync/atomic"

// Counters are the WireGuard messages (data, handshakes and cookie
// replies; not disco or STUN) a Conn has carried, by the way they went:
// a direct UDP path or a DERP relay. A message sent both ways while a
// direct path is being proven counts on both.
type Counters struct {
	DirectPacketsIn, DirectPacketsOut uint64
	DirectBytesIn, DirectBytesOut     uint64
	DERPPacketsIn, DERPPacketsOut     uint64
	DERPBytesIn, DERPBytesOut         uint64
}

// counter is a packet and byte count updated on the hot path.
type counter struct {
	packets, bytes atomic.Uint64
}

func (c *counter) add(n int) {
	c.packets.Add(1)
	c.bytes.Add(uint64(n))
}

// countSent records a message of n bytes sent if err is nil, and returns
// err.
func (c *counter) countSent(n int, err error) error {
	if err == nil {
		c.add(n)
	}
	return err
}

// counters are the Conn's Counters as they are kept.
type counters struct {
	directIn, directOut, derpIn, derpOut counter
}

// Counters returns the WireGuard messages carried so far.
func (c *Conn) Counters() Counters {
	k := &c.counts
	return Counters{
		DirectPacketsIn: k.directIn.packets.Load(), DirectPacketsOut: k.directOut.packets.Load(),
		DirectBytesIn: k.directIn.bytes.Load(), DirectBytesOut: k.directOut.bytes.Load(),
		DERPPacketsIn: k.derpIn.packets.Load(), DERPPacketsOut: k.derpOut.packets.Load(),
		DERPBytesIn: k.derpIn.bytes.Load(), DERPBytesOut: k.derpOut.bytes.Load(),
	}
}
