package magicsock

import (
	"net/netip"
	"sync"
	"sync/atomic"
)

// A corked Conn holds the datagrams Send makes for trusted direct paths
// and sends them together when uncorked (see Cork). The batch is bounded:
// when it fills, it is sent at once.
const (
	maxBatch   = 64       // datagrams held at most
	batchBytes = 96 << 10 // their total size at most
	maxHeld    = 4 << 10  // a larger datagram is sent at once, after those held
)

// heldMsg is a datagram held in the batch: buf[off:off+n], for dst.
type heldMsg struct {
	off, n int
	dst    netip.AddrPort
}

// sendBatch is what a corked Conn holds, and the means to send it.
type sendBatch struct {
	corked atomic.Int32 // corks, for Send to test without the lock

	mu    sync.Mutex // guards the fields below and the socket writers
	corks int
	buf   []byte // made on first use
	msgs  []heldMsg
	w4    batchWriter // the IPv4 socket's
	w6    batchWriter // the IPv6 socket's
}

// Cork makes Send hold the WireGuard messages it sends over trusted
// direct paths, from every goroutine, until the matching Uncork; then
// they go out together, with as few system calls as the kernel allows:
// on Linux, consecutive datagrams to one destination as one UDP
// segmentation offload (GSO) send of up to 64 KiB, and all of them in one
// sendmmsg. A caller about to send a burst, such as the packets of one
// read from a TUN device, corks around it. Corks nest. Messages through
// DERP or to unproven paths are never held; a full batch is sent at
// once. Errors of held sends are not returned: the datagrams are lost as
// on a congested link, and not counted as sent.
func (c *Conn) Cork() {
	b := &c.out
	b.mu.Lock()
	b.corks++
	b.corked.Store(int32(b.corks))
	b.mu.Unlock()
}

// Uncork undoes a Cork; the last one sends what is held.
func (c *Conn) Uncork() {
	b := &c.out
	b.mu.Lock()
	if b.corks > 0 {
		b.corks--
		b.corked.Store(int32(b.corks))
	}
	if b.corks == 0 {
		c.flushLocked()
	}
	b.mu.Unlock()
}

// hold adds msg for dst to the batch if the Conn is corked, and reports
// whether it did. The caller has checked that dst is a UDP address.
func (c *Conn) hold(msg []byte, dst netip.AddrPort) bool {
	b := &c.out
	if b.corked.Load() == 0 || c.dropUDP.Load() {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.corks == 0 || dst.Addr().Zone() != "" {
		return false
	}
	if len(msg) > maxHeld {
		c.flushLocked() // keep the order
		return false
	}
	if b.buf == nil {
		b.buf = make([]byte, batchBytes)
		b.msgs = make([]heldMsg, 0, maxBatch)
	}
	off := 0
	if n := len(b.msgs); n > 0 {
		off = b.msgs[n-1].off + b.msgs[n-1].n
	}
	if off+len(msg) > len(b.buf) {
		c.flushLocked()
		off = 0
	}
	copy(b.buf[off:], msg)
	b.msgs = append(b.msgs, heldMsg{off: off, n: len(msg), dst: dst})
	if len(b.msgs) == maxBatch {
		c.flushLocked()
	}
	return true
}

// flushLocked sends the held datagrams, each address family's from its
// socket, in order within each family. b.mu is held.
func (c *Conn) flushLocked() {
	b := &c.out
	if len(b.msgs) == 0 {
		return
	}
	var v4, v6 bool
	for _, m := range b.msgs {
		if m.dst.Addr().Is4() {
			v4 = true
		} else {
			v6 = true
		}
	}
	if v4 {
		if pc := c.pc4.Load(); pc != nil {
			b.w4.write(pc, b.buf, b.msgs, true, &c.counts.directOut)
		}
	}
	if v6 {
		if pc := c.pc6.Load(); pc != nil {
			b.w6.write(pc, b.buf, b.msgs, false, &c.counts.directOut)
		}
	}
	b.msgs = b.msgs[:0]
}
