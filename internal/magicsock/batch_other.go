//go:build !linux

package magicsock

import "net"

// batchWriter sends a socket's share of a batch, one datagram at a time.
type batchWriter struct{}

// write sends the datagrams of msgs whose destination is of the family
// (IPv4 if want4) from pc, out of buf, and counts those sent in ctr.
func (w *batchWriter) write(pc *net.UDPConn, buf []byte, msgs []heldMsg, want4 bool, ctr *counter) {
	for _, m := range msgs {
		if m.dst.Addr().Is4() != want4 {
			continue
		}
		if _, err := pc.WriteToUDPAddrPort(buf[m.off:m.off+m.n], m.dst); err == nil {
			ctr.add(m.n)
		}
	}
}

// readBatch reads pc one datagram at a time: it returns false for
// readLoop to do so.
func (c *Conn) readBatch(pc *net.UDPConn) bool { return false }
