package microlink

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/microlink-go/microlink/internal/key"
	"github.com/microlink-go/microlink/internal/netmap"
	"github.com/microlink-go/microlink/internal/tailcfg"
	"github.com/microlink-go/microlink/internal/tunnel"
)

// bigNetmap returns a full MapResponse with n peers.
func bigNetmap(n int) *tailcfg.MapResponse {
	self := key.NewPrivate()
	resp := &tailcfg.MapResponse{
		Node: &tailcfg.Node{ID: 1, Key: self.NodePublic(), Name: "self.ts.net.", MachineAuthorized: true,
			Addresses: []netip.Prefix{netip.MustParsePrefix("100.64.0.1/32")}},
	}
	for i := range n {
		a := netip.AddrFrom4([4]byte{100, 65, byte(i >> 8), byte(i)})
		resp.Peers = append(resp.Peers, &tailcfg.Node{
			ID: tailcfg.NodeID(i + 2), Key: key.NewPrivate().NodePublic(), DiscoKey: key.NewPrivate().DiscoPublic(),
			Name: fmt.Sprintf("peer%d.ts.net.", i), HomeDERP: 1,
			Addresses:  []netip.Prefix{netip.PrefixFrom(a, 32)},
			AllowedIPs: []netip.Prefix{netip.PrefixFrom(a, 32)},
			Endpoints:  []netip.AddrPort{netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), 41641)},
			KeyExpiry:  time.Now().Add(24 * time.Hour),
		})
	}
	return resp
}

// BenchmarkPathDelta measures a delta that changes one peer's endpoints,
// applied to the netmap and the data plane, at 10k peers.
func BenchmarkPathDelta(b *testing.B) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	stack := tunnel.New(tunnel.Config{Output: func([]byte) error { return nil }, Logger: logger})
	defer stack.Close()
	d, err := newDataPlane(dataPlaneConfig{Stack: stack, NodeKey: key.NewPrivate(), DiscoKey: key.NewPrivate(), Port: 0, Logger: logger})
	if err != nil {
		b.Fatal(err)
	}
	defer d.close()
	nm := netmap.New(netmap.Options{})
	full := bigNetmap(10000)
	ch, err := nm.Apply(mapMessage(b, full))
	if err != nil {
		b.Fatal(err)
	}
	d.apply(nm, ch)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		ep := []netip.AddrPort{netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), uint16(i))}
		ch, err := nm.Apply(mapMessage(b, &tailcfg.MapResponse{PeersChangedPatch: []*tailcfg.PeerChange{{NodeID: tailcfg.NodeID(2 + i%10000), Endpoints: ep}}}))
		if err != nil || !ch.PathsChanged {
			b.Fatal(err, ch)
		}
		d.apply(nm, ch)
	}
}
