//go:build !microlinkonly

package main

import (
	"context"
	"net"
	"net/netip"

	"tailscale.com/logtail"
	"tailscale.com/tsnet"
)

type tsNode struct{ s *tsnet.Server }

func startTSNet(ctx context.Context, control, authKey, hostname, dir string) (node, error) {
	// Nothing of the test may leave the machine.
	logtail.Disable()
	s := &tsnet.Server{Dir: dir, Hostname: hostname, ControlURL: control, AuthKey: authKey,
		Logf: func(string, ...any) {}, UserLogf: func(string, ...any) {}}
	if _, err := s.Up(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return tsNode{s}, nil
}

func (t tsNode) ip() netip.Addr { ip4, _ := t.s.TailscaleIPs(); return ip4 }
func (t tsNode) listen(port uint16) (net.Listener, error) {
	return t.s.Listen("tcp", netip.AddrPortFrom(t.ip(), port).String())
}
func (t tsNode) stats() any { return nil }
func (t tsNode) close()     { t.s.Close() }
