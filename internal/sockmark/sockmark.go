// Package sockmark tags the node's own sockets (WireGuard's UDP socket,
// control, DERP and STUN) with a firewall mark in TUN mode, so that policy
// routing sends them around the TUN device instead of into the tunnel
// they carry, as an exit node's default route would.
//
// The mark is process-wide: one TUN-mode node per process (and per
// network namespace) routes the host.
package sockmark

import (
	"context"
	"net"
	"sync/atomic"
	"syscall"
)

var mark atomic.Uint32

// Set makes every socket opened afterwards through Control carry mark m;
// 0 turns marking off. Setting a mark needs CAP_NET_ADMIN.
func Set(m uint32) { mark.Store(m) }

// Mark returns the mark sockets get, or 0.
func Mark() uint32 { return mark.Load() }

// Control is a net.Dialer and net.ListenConfig Control function that
// marks the socket when a mark is set.
func Control(network, address string, c syscall.RawConn) error {
	m := mark.Load()
	if m == 0 {
		return nil
	}
	var serr error
	err := c.Control(func(fd uintptr) { serr = setMark(fd, m) })
	if err != nil {
		return err
	}
	return serr
}

// ListenUDP is net.ListenUDP with the socket marked.
func ListenUDP(network string, laddr *net.UDPAddr) (*net.UDPConn, error) {
	if mark.Load() == 0 {
		return net.ListenUDP(network, laddr)
	}
	lc := net.ListenConfig{Control: Control}
	var addr string
	if laddr != nil {
		addr = laddr.String()
	}
	pc, err := lc.ListenPacket(context.Background(), network, addr)
	if err != nil {
		return nil, err
	}
	return pc.(*net.UDPConn), nil
}
