package microlink

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"

	"github.com/microlink-go/microlink/internal/dns"
)

// Dial connects to addr ("host:port") on network "tcp", "tcp4", "tcp6",
// "udp", "udp4" or "udp6" through the tailnet, like net.Dial. host may
// be an IP address, a MagicDNS name (short or full), one of the netmap's
// extra records, or another name, which the node's resolver looks up
// through the tailnet's DNS configuration. The resolver itself answers at
// 100.100.100.100:53 (and [fd7a:115c:a1e0::53]:53), over UDP and TCP. An
// address no peer carries fails at once with ErrNoRoute.
func (n *Node) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6", "udp", "udp4", "udp6":
	default:
		return nil, &net.OpError{Op: "dial", Net: network, Err: net.UnknownNetworkError(network)}
	}
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: fmt.Errorf("bad port %q", portStr)}
	}
	if _, err := n.dataPlane(); err != nil {
		return nil, err
	}
	addrs, err := n.LookupHost(ctx, host)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	var lastErr error
	for _, ip := range addrs {
		if (network[len(network)-1] == '4' && !ip.Is4()) || (network[len(network)-1] == '6' && !ip.Is6()) {
			continue
		}
		c, err := n.dialAddr(ctx, network, netip.AddrPortFrom(ip, uint16(port)))
		if err == nil {
			return c, nil
		}
		lastErr = err
		if ctx.Err() != nil {
			break
		}
	}
	if lastErr == nil {
		lastErr = &net.OpError{Op: "dial", Net: network, Err: fmt.Errorf("no %s address for %s", network, host)}
	}
	return nil, lastErr
}

// ErrNoRoute is the error, or is wrapped by the error, of a dial to an
// address that no peer carries for this node: not a node's address, nor
// in a route control gave and the node uses (Config.AcceptRoutes,
// Config.ExitNode). The wrapping error says which it is.
var ErrNoRoute = errors.New("microlink: no route to the address in the tailnet")

// LookupHost returns the addresses of host as Dial finds them: an IP
// address, a MagicDNS name, an extra record, or a name the tailnet's DNS
// configuration resolves. IPv4 addresses come first.
func (n *Node) LookupHost(ctx context.Context, host string) ([]netip.Addr, error) {
	return n.dns.LookupHost(ctx, host)
}

// dialAddr connects to one address.
func (n *Node) dialAddr(ctx context.Context, network string, dst netip.AddrPort) (net.Conn, error) {
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	if dns.IsResolver(dst.Addr()) && dst.Port() == 53 {
		return n.dialResolver(network, dst)
	}
	data, err := n.dataPlane()
	if err != nil {
		return nil, err
	}
	if n.cfg.TUN != "" {
		return hostDial(ctx, network, dst)
	}
	if !data.wg.HasRoute(dst.Addr()) {
		// Say why, as the routing policy sees it.
		err := data.policy.routeTo(n.nm, data.exitNode(), dst.Addr())
		if err == nil {
			err = ErrNoRoute
		}
		return nil, &net.OpError{Op: "dial", Net: network, Addr: netAddr(network, dst), Err: err}
	}
	if network[0] == 't' {
		c, err := data.stack.DialTCP(ctx, dst)
		if err != nil {
			return nil, publicErr(&net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(dst), Err: err})
		}
		return c, nil
	}
	c, err := data.stack.ListenUDP(0)
	if err != nil {
		return nil, n.listenError("udp", 0, err)
	}
	return &connectedUDP{u: &UDPConn{c: c}, remote: dst}, nil
}

func netAddr(network string, ap netip.AddrPort) net.Addr {
	if network[0] == 't' {
		return net.TCPAddrFromAddrPort(ap)
	}
	return net.UDPAddrFromAddrPort(ap)
}
