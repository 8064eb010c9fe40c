package tunnel

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/microlink-go/microlink/internal/bufpool"
	"github.com/microlink-go/microlink/internal/packet"
)

// udpQueueLen bounds the datagrams waiting in one socket; more are dropped,
// as a kernel socket buffer would.
const udpQueueLen = 128

type datagram struct {
	from netip.AddrPort
	buf  *[]byte
	n    int
}

// UDPConn is a UDP socket on the node's tailnet addresses. It implements
// net.PacketConn; addresses are *net.UDPAddr.
type UDPConn struct {
	s     *Stack
	port  uint16
	queue chan datagram

	closeOnce sync.Once
	done      chan struct{}

	mu            sync.Mutex
	readDeadline  time.Time
	writeDeadline time.Time
	deadlineSet   chan struct{} // closed and replaced when the read deadline changes
}

// ListenUDP opens a UDP socket on port of the node's addresses. Port 0
// picks a free ephemeral port.
func (s *Stack) ListenUDP(port uint16) (*UDPConn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if port == 0 {
		for i := 0; i < 16384; i++ {
			p := uint16(49152 + (s.nextEphem+uint32(i))%16384)
			if s.udp[p] == nil {
				port = p
				s.nextEphem += uint32(i) + 1
				break
			}
		}
		if port == 0 {
			return nil, fmt.Errorf("tunnel: no free UDP port: %w", syscall.EADDRINUSE)
		}
	}
	if s.udp[port] != nil {
		return nil, syscall.EADDRINUSE
	}
	c := &UDPConn{
		s:           s,
		port:        port,
		queue:       make(chan datagram, udpQueueLen),
		done:        make(chan struct{}),
		deadlineSet: make(chan struct{}),
	}
	s.udp[port] = c
	return c, nil
}

// enqueue copies a datagram into the socket's queue; false if it is full or closed.
func (c *UDPConn) enqueue(from netip.AddrPort, payload []byte, pool *bufpool.Pool) bool {
	select {
	case <-c.done:
		return false
	default:
	}
	bp := pool.Get()
	n := copy(*bp, payload)
	select {
	case c.queue <- datagram{from: from, buf: bp, n: n}:
		return true
	default:
		pool.Put(bp)
		return false
	}
}

// Port returns the local port.
func (c *UDPConn) Port() uint16 { return c.port }

// ReadFromUDPAddrPort reads one datagram into b and returns its length and
// sender. A datagram longer than b is truncated.
func (c *UDPConn) ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error) {
	for {
		c.mu.Lock()
		dl, changed := c.readDeadline, c.deadlineSet
		c.mu.Unlock()
		var timeout <-chan time.Time
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				return 0, netip.AddrPort{}, os.ErrDeadlineExceeded
			}
			t := time.NewTimer(d)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case d := <-c.queue:
			n := copy(b, (*d.buf)[:d.n])
			c.s.pool.Put(d.buf)
			return n, d.from, nil
		case <-c.done:
			return 0, netip.AddrPort{}, net.ErrClosed
		case <-timeout:
			return 0, netip.AddrPort{}, os.ErrDeadlineExceeded
		case <-changed:
		}
	}
}

// ReadFrom implements net.PacketConn.
func (c *UDPConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, from, err := c.ReadFromUDPAddrPort(b)
	if err != nil {
		return 0, nil, c.opError("read", err)
	}
	return n, net.UDPAddrFromAddrPort(from), nil
}

// WriteToUDPAddrPort sends b to dst from this socket's port on the node's
// address of dst's family.
func (c *UDPConn) WriteToUDPAddrPort(b []byte, dst netip.AddrPort) (int, error) {
	select {
	case <-c.done:
		return 0, net.ErrClosed
	default:
	}
	c.mu.Lock()
	wdl := c.writeDeadline
	c.mu.Unlock()
	if !wdl.IsZero() && !time.Now().Before(wdl) {
		return 0, os.ErrDeadlineExceeded
	}
	dstIP := dst.Addr().Unmap()
	src, ok := c.s.source(dstIP)
	if !ok {
		return 0, noSource(dstIP)
	}
	if packet.IPHeaderLen(src)+packet.UDPHeaderLen+len(b) > MaxPacket {
		return 0, fmt.Errorf("tunnel: datagram of %d bytes exceeds the tunnel MTU %d: %w", len(b), MaxPacket, syscall.EMSGSIZE)
	}
	bp := c.s.pool.Get()
	defer c.s.pool.Put(bp)
	n, err := packet.BuildUDP(*bp, netip.AddrPortFrom(src, c.port), netip.AddrPortFrom(dstIP, dst.Port()), b)
	if err != nil {
		return 0, err
	}
	if err := c.s.output((*bp)[:n]); err != nil {
		return 0, err
	}
	return len(b), nil
}

// WriteTo implements net.PacketConn; addr must be a *net.UDPAddr.
func (c *UDPConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, c.opError("write", fmt.Errorf("tunnel: address %v is not a *net.UDPAddr", addr))
	}
	n, err := c.WriteToUDPAddrPort(b, ua.AddrPort())
	if err != nil {
		return n, c.opError("write", err)
	}
	return n, nil
}

// Close closes the socket; blocked reads return net.ErrClosed.
func (c *UDPConn) Close() error {
	c.closeOnce.Do(func() {
		close(c.done)
		c.s.mu.Lock()
		if c.s.udp[c.port] == c {
			delete(c.s.udp, c.port)
		}
		c.s.mu.Unlock()
		for {
			select {
			case d := <-c.queue:
				c.s.pool.Put(d.buf)
			default:
				return
			}
		}
	})
	return nil
}

// LocalAddr returns the node's first address and this socket's port.
func (c *UDPConn) LocalAddr() net.Addr {
	var a netip.Addr
	if addrs := c.s.Addresses(); len(addrs) > 0 {
		a = addrs[0]
	}
	return net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, c.port))
}

// SetDeadline sets the read and write deadlines.
func (c *UDPConn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

// SetReadDeadline sets the deadline for reads, waking a blocked read.
func (c *UDPConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.readDeadline = t
	close(c.deadlineSet)
	c.deadlineSet = make(chan struct{})
	c.mu.Unlock()
	return nil
}

// SetWriteDeadline sets the deadline for writes.
func (c *UDPConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	c.writeDeadline = t
	c.mu.Unlock()
	return nil
}

func (c *UDPConn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "udp", Addr: c.LocalAddr(), Err: err}
}
