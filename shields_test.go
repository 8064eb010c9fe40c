package microlink

import (
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/microlink-go/microlink/internal/key"
	"github.com/microlink-go/microlink/internal/netmap"
	"github.com/microlink-go/microlink/internal/packet"
	"github.com/microlink-go/microlink/internal/tailcfg"
	"github.com/microlink-go/microlink/internal/tunnel"
)

// TestShieldsUp: with shields up, a datagram the tailnet's ACL allows is
// dropped; without, it is delivered.
func TestShieldsUp(t *testing.T) {
	for _, shields := range []bool{false, true} {
		logger := slog.New(slog.NewTextHandler(io.Discard, nil))
		stack := tunnel.New(tunnel.Config{Output: func([]byte) error { return nil }, Logger: logger})
		d, err := newDataPlane(dataPlaneConfig{Stack: stack, NodeKey: key.NewPrivate(), DiscoKey: key.NewPrivate(), Logger: logger, ShieldsUp: shields})
		if err != nil {
			t.Fatal(err)
		}
		peer := key.NewPrivate().NodePublic()
		nm := netmap.New(netmap.Options{})
		ch, err := nm.Apply(mapMessage(t, &tailcfg.MapResponse{
			Node:  &tailcfg.Node{ID: 1, Addresses: []netip.Prefix{netip.MustParsePrefix("100.64.0.1/32")}},
			Peers: []*tailcfg.Node{{ID: 2, Key: peer, Addresses: []netip.Prefix{netip.MustParsePrefix("100.64.0.2/32")}}},
			PacketFilter: []tailcfg.FilterRule{{SrcIPs: []string{"*"},
				DstPorts: []tailcfg.NetPortRange{{IP: "*", Ports: tailcfg.PortRange{First: 0, Last: 65535}}}}},
		}))
		if err != nil {
			t.Fatal(err)
		}
		d.apply(nm, ch)
		c, err := stack.ListenUDP(9000)
		if err != nil {
			t.Fatal(err)
		}
		pkt := make([]byte, 128)
		n, err := packet.BuildUDP(pkt, netip.MustParseAddrPort("100.64.0.2:5000"), netip.MustParseAddrPort("100.64.0.1:9000"), []byte("hi"))
		if err != nil {
			t.Fatal(err)
		}
		stack.Inbound(peer, pkt[:n])
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		_, _, rerr := c.ReadFromUDPAddrPort(make([]byte, 16))
		if got := rerr == nil; got == shields {
			t.Errorf("shields up %v: datagram delivered %v", shields, got)
		}
		c.Close()
		d.close()
		stack.Close()
	}
}
