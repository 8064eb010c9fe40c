package microlink

import (
	"net"
	"net/netip"
	"time"

	"github.com/microlink-go/microlink/internal/tunnel"
)

// UDPConn is a UDP socket on the node's tailnet addresses, as ListenUDP
// opens it. It implements net.PacketConn; its addresses are *net.UDPAddr.
// It is safe for concurrent use. Datagrams that arrive faster than they
// are read are dropped once 128 wait, as a kernel socket's buffer would.
type UDPConn struct {
	c *tunnel.UDPConn
}

// ReadFrom reads one datagram into b and returns its length and sender. A
// datagram longer than b is truncated.
func (u *UDPConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, from, err := u.ReadFromUDPAddrPort(b)
	if err != nil {
		return 0, nil, err
	}
	return n, net.UDPAddrFromAddrPort(from), nil
}

// ReadFromUDPAddrPort is ReadFrom with the sender as a netip.AddrPort. It
// does not allocate.
func (u *UDPConn) ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error) {
	n, from, err := u.c.ReadFromUDPAddrPort(b)
	if err != nil {
		return 0, netip.AddrPort{}, u.opError("read", nil, err)
	}
	return n, from, nil
}

// WriteTo sends b as one datagram to addr, a *net.UDPAddr, from the
// socket's port on the node's address of addr's family.
func (u *UDPConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, u.opError("write", addr, net.InvalidAddrError("not a *net.UDPAddr"))
	}
	return u.WriteToUDPAddrPort(b, ua.AddrPort())
}

// WriteToUDPAddrPort is WriteTo with a netip.AddrPort.
func (u *UDPConn) WriteToUDPAddrPort(b []byte, addr netip.AddrPort) (int, error) {
	n, err := u.c.WriteToUDPAddrPort(b, addr)
	if err != nil {
		return n, u.opError("write", net.UDPAddrFromAddrPort(addr), err)
	}
	return n, nil
}

// Close closes the socket; blocked reads return an error wrapping
// net.ErrClosed.
func (u *UDPConn) Close() error { return u.c.Close() }

// Port returns the socket's local port.
func (u *UDPConn) Port() uint16 { return u.c.Port() }

// LocalAddr returns the node's first tailnet address and the socket's port.
func (u *UDPConn) LocalAddr() net.Addr { return u.c.LocalAddr() }

// SetDeadline sets the read and write deadlines.
func (u *UDPConn) SetDeadline(t time.Time) error { return u.c.SetDeadline(t) }

// SetReadDeadline sets the deadline for reads, waking a blocked read.
func (u *UDPConn) SetReadDeadline(t time.Time) error { return u.c.SetReadDeadline(t) }

// SetWriteDeadline sets the deadline for writes.
func (u *UDPConn) SetWriteDeadline(t time.Time) error { return u.c.SetWriteDeadline(t) }

func (u *UDPConn) opError(op string, addr net.Addr, err error) error {
	return publicErr(&net.OpError{Op: op, Net: "udp", Source: u.LocalAddr(), Addr: addr, Err: err})
}

// connectedUDP is a UDP socket bound to one remote address, as DialUDP
// returns. Datagrams from other senders are discarded.
type connectedUDP struct {
	u      *UDPConn
	remote netip.AddrPort
}

func (c *connectedUDP) Read(b []byte) (int, error) {
	for {
		n, from, err := c.u.ReadFromUDPAddrPort(b)
		if err != nil {
			return 0, err
		}
		if from.Addr().Unmap() == c.remote.Addr() && from.Port() == c.remote.Port() {
			return n, nil
		}
	}
}

func (c *connectedUDP) Write(b []byte) (int, error) { return c.u.WriteToUDPAddrPort(b, c.remote) }

func (c *connectedUDP) Close() error                       { return c.u.Close() }
func (c *connectedUDP) LocalAddr() net.Addr                { return c.u.LocalAddr() }
func (c *connectedUDP) RemoteAddr() net.Addr               { return net.UDPAddrFromAddrPort(c.remote) }
func (c *connectedUDP) SetDeadline(t time.Time) error      { return c.u.SetDeadline(t) }
func (c *connectedUDP) SetReadDeadline(t time.Time) error  { return c.u.SetReadDeadline(t) }
func (c *connectedUDP) SetWriteDeadline(t time.Time) error { return c.u.SetWriteDeadline(t) }
