package microlink

import (
	"net"
	"net/netip"
	"time"

	"github.com/microlink-go/microlink/internal/tunnel"
)

// connectedUDP is a UDP socket bound to one remote address, as DialUDP
// returns. Datagrams from other senders are discarded.
type connectedUDP struct {
	c      *tunnel.UDPConn
	remote netip.AddrPort
}

func (u *connectedUDP) Read(b []byte) (int, error) {
	for {
		n, from, err := u.c.ReadFromUDPAddrPort(b)
		if err != nil {
			return 0, &net.OpError{Op: "read", Net: "udp", Addr: u.RemoteAddr(), Err: err}
		}
		if from.Addr().Unmap() == u.remote.Addr() && from.Port() == u.remote.Port() {
			return n, nil
		}
	}
}

func (u *connectedUDP) Write(b []byte) (int, error) {
	n, err := u.c.WriteToUDPAddrPort(b, u.remote)
	if err != nil {
		return n, &net.OpError{Op: "write", Net: "udp", Addr: u.RemoteAddr(), Err: err}
	}
	return n, nil
}

func (u *connectedUDP) Close() error                       { return u.c.Close() }
func (u *connectedUDP) LocalAddr() net.Addr                { return u.c.LocalAddr() }
func (u *connectedUDP) RemoteAddr() net.Addr               { return net.UDPAddrFromAddrPort(u.remote) }
func (u *connectedUDP) SetDeadline(t time.Time) error      { return u.c.SetDeadline(t) }
func (u *connectedUDP) SetReadDeadline(t time.Time) error  { return u.c.SetReadDeadline(t) }
func (u *connectedUDP) SetWriteDeadline(t time.Time) error { return u.c.SetWriteDeadline(t) }
