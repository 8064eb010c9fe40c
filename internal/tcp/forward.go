package tcp

import "net/netip"

// ListenAny returns a listener for connections to addresses the node
// does not own, on any port: a subnet router in userspace mode ends its
// peers' connections to the networks it routes in the node, and
// InboundVia feeds the segments of such connections to this listener.
// The LocalAddr of an accepted connection is the address the peer
// connected to. The listener is the caller's to close; closing the stack
// does not close it.
func (s *Stack) ListenAny() *Listener {
	return &Listener{s: s, acceptq: make(chan *Conn, s.cfg.Backlog), done: make(chan struct{})}
}

// InboundVia is Inbound for a segment to an address the stack does not
// own: a segment that opens a connection goes to l, a listener from
// ListenAny, instead of the listener of its port.
func (s *Stack) InboundVia(l *Listener, src, dst netip.Addr, seg []byte) {
	s.deliver(l, src, dst, seg)
}
