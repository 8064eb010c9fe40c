package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"github.com/microlink-go/microlink/interop/lab"
	"tailscale.com/tsnet"
)

// farEnd is where this process meets the tailnet for traffic with a peer
// other than microlink: sockets on the real peer's TUN address, or a tsnet
// peer's sockets when the real peer has no TUN device.
type farEnd struct {
	name  string // in the tailnet
	addr  netip.Addr
	label string        // what it is, for a person
	ts    *tsnet.Server // nil for the real peer's TUN
}

// farEnd returns the far end, starting the tsnet peer on first use if
// the real peer has no TUN device.
func (d *demo) farEnd(ctx context.Context) (*farEnd, error) {
	if d.far != nil {
		return d.far, nil
	}
	if d.tun {
		d.far = &farEnd{name: peerName, addr: d.peer.IPv4(), label: "a socket of this process on the real peer's TUN address"}
		return d.far, nil
	}
	var s *tsnet.Server
	if err := d.r.Do(func() { s = lab.StartTSNet(d.r, d.lab, tsnetName) }); err != nil {
		return nil, err
	}
	addr, _ := s.TailscaleIPs()
	if _, err := d.waitNodePeer(ctx, tsnetName); err != nil {
		return nil, err
	}
	d.far = &farEnd{name: tsnetName, addr: addr, ts: s,
		label: "an in-process tsnet peer " + tsnetName + " (the real peer has no TUN device)"}
	return d.far, nil
}

// listenPacket opens a UDP socket on the far end's address.
func (f *farEnd) listenPacket() (net.PacketConn, error) {
	ap := netip.AddrPortFrom(f.addr, 0)
	if f.ts != nil {
		c, err := f.ts.ListenPacket("udp", ap.String())
		if err != nil {
			return nil, fmt.Errorf("tsnet ListenPacket: %w", err)
		}
		return c, nil
	}
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(ap))
	if err != nil {
		return nil, fmt.Errorf("UDP socket on %v (the real peer's TUN address): %w", f.addr, err)
	}
	return c, nil
}

// listen opens a TCP listener on the far end's address.
func (f *farEnd) listen() (net.Listener, error) {
	ap := netip.AddrPortFrom(f.addr, 0)
	if f.ts != nil {
		ln, err := f.ts.Listen("tcp", ap.String())
		if err != nil {
			return nil, fmt.Errorf("tsnet Listen: %w", err)
		}
		return ln, nil
	}
	ln, err := net.Listen("tcp4", ap.String())
	if err != nil {
		return nil, fmt.Errorf("TCP listener on %v (the real peer's TUN address): %w", f.addr, err)
	}
	return ln, nil
}
