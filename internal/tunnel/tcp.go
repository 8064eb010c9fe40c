package tunnel

import (
	"context"
	"net/netip"

	"github.com/microlink-go/microlink/internal/tcp"
)

// ListenTCP listens for TCP connections to port on the node's addresses.
// SYNs reach it only if the packet filter allows them; segments to ports
// nobody listens on are answered with a reset.
func (s *Stack) ListenTCP(port uint16) (*tcp.Listener, error) {
	return s.tcp.Listen(port)
}

// DialTCP connects to dst from the node's address of dst's family.
func (s *Stack) DialTCP(ctx context.Context, dst netip.AddrPort) (*tcp.Conn, error) {
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	src, ok := s.source(dst.Addr())
	if !ok {
		return nil, noSource(dst.Addr())
	}
	return s.tcp.Dial(ctx, src, dst)
}

// TCP returns the stack's TCP, for a subnet router that ends connections
// to routed networks in it.
func (s *Stack) TCP() *tcp.Stack { return s.tcp }

// TCPStats returns the TCP stack's counters.
func (s *Stack) TCPStats() tcp.Stats { return s.tcp.Stats() }
