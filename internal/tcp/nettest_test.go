package tcp

import (
	"context"
	"net"
	"net/netip"
	"testing"

	"golang.org/x/net/nettest"
)

// TestNetConnConformance runs the net.Conn conformance tests of
// golang.org/x/net/nettest: I/O, deadlines, concurrent use and Close.
func TestNetConnConformance(t *testing.T) {
	nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
		l := newLink(impairments{})
		cfg := fastConfig()
		cfg.Output = l.output
		a, b := New(cfg), New(cfg)
		l.stacks[addrA4], l.stacks[addrB4] = a, b
		stop = func() { a.Close(); b.Close(); l.close() }
		ln, err := b.Listen(80)
		if err != nil {
			stop()
			return nil, nil, nil, err
		}
		defer ln.Close()
		c, err := a.Dial(context.Background(), addrA4, netip.AddrPortFrom(addrB4, 80))
		if err != nil {
			stop()
			return nil, nil, nil, err
		}
		s, err := ln.Accept()
		if err != nil {
			stop()
			return nil, nil, nil, err
		}
		return c, s, stop, nil
	})
}
