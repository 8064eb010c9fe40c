package microlink

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/microlink-go/microlink/internal/key"
	"github.com/microlink-go/microlink/internal/netmap"
	"github.com/microlink-go/microlink/internal/packet"
	"github.com/microlink-go/microlink/internal/tailcfg"
	"github.com/microlink-go/microlink/internal/tunnel"
	"github.com/microlink-go/microlink/internal/wireguard"
)

var (
	lanRoute  = netip.MustParsePrefix("198.19.1.0/24")
	lanHost   = netip.MustParseAddr("198.19.1.5")
	inetHost  = netip.MustParseAddr("198.18.200.1")
	inetHost6 = netip.MustParseAddr("2001:db8::1")
)

// routesNetmap is a tailnet with a subnet router, an exit node (which also
// routes a LAN of its own) and a plain peer.
func routesNetmap(withExit bool) *tailcfg.MapResponse {
	pfx := netip.MustParsePrefix
	node := func(id int, name, v4 string, routes ...netip.Prefix) *tailcfg.Node {
		addrs := []netip.Prefix{pfx(v4 + "/32")}
		return &tailcfg.Node{
			ID: tailcfg.NodeID(id), Key: key.NewPrivate().NodePublic(), DiscoKey: key.NewPrivate().DiscoPublic(),
			Name: name + ".ts.net.", Addresses: addrs, AllowedIPs: append(slices.Clip(addrs), routes...),
			KeyExpiry: time.Now().Add(time.Hour),
		}
	}
	resp := &tailcfg.MapResponse{
		Node: &tailcfg.Node{ID: 1, Key: key.NewPrivate().NodePublic(), Name: "self.ts.net.", MachineAuthorized: true,
			Addresses: []netip.Prefix{pfx("100.64.0.1/32")}},
		Peers: []*tailcfg.Node{
			node(2, "router", "100.64.0.2", lanRoute),
			node(4, "plain", "100.64.0.4"),
		},
	}
	if withExit {
		resp.Peers = append(resp.Peers, node(3, "exitnode", "100.64.0.3", exitRoute4, exitRoute6, pfx("198.19.3.0/24")))
	}
	return resp
}

func newPolicyDataPlane(t *testing.T, p routePolicy) *dataPlane {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	stack := tunnel.New(tunnel.Config{Output: func([]byte) error { return nil }, Logger: logger})
	d, err := newDataPlane(dataPlaneConfig{Stack: stack, NodeKey: key.NewPrivate(), DiscoKey: key.NewPrivate(), Logger: logger, Routes: p, Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.close(); stack.Close() })
	return d
}

// routed reports whether WireGuard has a peer for a packet to dst.
func routed(t *testing.T, d *dataPlane, dst netip.Addr) bool {
	t.Helper()
	src := netip.MustParseAddr("100.64.0.1")
	if dst.Is6() {
		src = netip.MustParseAddr("fd7a:115c:a1e0::1")
	}
	b := make([]byte, 128)
	n, err := packet.BuildUDP(b, netip.AddrPortFrom(src, 1), netip.AddrPortFrom(dst, 2), []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	err = d.wg.SendPacket(b[:n])
	if err != nil && !errors.Is(err, wireguard.ErrNoRoute) {
		t.Fatalf("SendPacket to %v: %v", dst, err)
	}
	return err == nil
}

func TestRoutePolicy(t *testing.T) {
	for _, tc := range []struct {
		name   string
		policy routePolicy
		// The peers that 198.19.1.0/24 (behind router), 198.19.3.0/24
		// (behind the exit node) and the internet are routed to; "" for
		// none.
		lan, lan3, inet string
		inetErr         string
	}{
		{"default", routePolicy{}, "", "", "", "no exit node is in use"},
		{"accept routes", routePolicy{acceptRoutes: true}, "router", "exitnode", "", "no exit node is in use"},
		{"exit node by name", routePolicy{exitNode: "exitnode"}, "exitnode", "exitnode", "exitnode", ""},
		{"exit node by IP", routePolicy{exitNode: "100.64.0.3"}, "exitnode", "exitnode", "exitnode", ""},
		{"both", routePolicy{acceptRoutes: true, exitNode: "exitnode"}, "router", "exitnode", "exitnode", ""},
		{"exit node is no exit node", routePolicy{exitNode: "plain"}, "", "", "", "does not offer itself as an exit node"},
		{"unknown exit node", routePolicy{exitNode: "nobody"}, "", "", "", `exit node "nobody" is not in the tailnet`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newPolicyDataPlane(t, tc.policy)
			nm := netmap.New(netmap.Options{})
			ch, err := nm.Apply(mapMessage(t, routesNetmap(true)))
			if err != nil {
				t.Fatal(err)
			}
			d.apply(nm, ch)
			for _, c := range []struct {
				dst netip.Addr
				via string
			}{
				{netip.MustParseAddr("100.64.0.4"), "plain"},
				{netip.MustParseAddr("100.64.0.2"), "router"},
				{lanHost, tc.lan},
				{netip.MustParseAddr("198.19.3.9"), tc.lan3},
				{inetHost, tc.inet},
				{inetHost6, tc.inet},
			} {
				if got := routed(t, d, c.dst); got != (c.via != "") {
					t.Errorf("WireGuard routes %v: %v, want %q", c.dst, got, c.via)
				}
				via, err := d.policy.via(nm, d.exitNode(), c.dst)
				if via != c.via || (err == nil) != (c.via != "") {
					t.Errorf("route to %v via %q (%v), want %q", c.dst, via, err, c.via)
				}
				if err != nil && !errors.Is(err, ErrNoRoute) {
					t.Errorf("route to %v: %v, not ErrNoRoute", c.dst, err)
				}
			}
			err = d.policy.routeTo(nm, d.exitNode(), inetHost)
			if tc.inetErr != "" && (err == nil || !strings.Contains(err.Error(), tc.inetErr)) {
				t.Errorf("routeTo(internet) = %v, want %q", err, tc.inetErr)
			}
			if err := d.policy.routeTo(nm, d.exitNode(), lanHost); tc.lan == "" && (err == nil || !strings.Contains(err.Error(), "router offers a route to it")) {
				t.Errorf("routeTo(LAN host) = %v", err)
			}
			if err := d.policy.routeTo(nm, d.exitNode(), netip.MustParseAddr("100.64.0.99")); err == nil || !strings.Contains(err.Error(), "no node of the tailnet") {
				t.Errorf("routeTo(unknown tailnet address) = %v", err)
			}
		})
	}
}

// TestExitNodeArrives: an exit node that joins after the netmap, by a
// delta, is used from then on.
func TestExitNodeArrives(t *testing.T) {
	d := newPolicyDataPlane(t, routePolicy{exitNode: "exitnode"})
	nm := netmap.New(netmap.Options{})
	ch, err := nm.Apply(mapMessage(t, routesNetmap(false)))
	if err != nil {
		t.Fatal(err)
	}
	d.apply(nm, ch)
	if routed(t, d, inetHost) {
		t.Fatal("the internet is routed without the exit node")
	}
	full := routesNetmap(true)
	ch, err = nm.Apply(mapMessage(t, &tailcfg.MapResponse{PeersChanged: full.Peers[2:]}))
	if err != nil {
		t.Fatal(err)
	}
	d.apply(nm, ch)
	if !routed(t, d, inetHost) {
		t.Fatal("the internet is not routed through the exit node that joined")
	}
	ch, err = nm.Apply(mapMessage(t, &tailcfg.MapResponse{PeersRemoved: []tailcfg.NodeID{3}}))
	if err != nil {
		t.Fatal(err)
	}
	d.apply(nm, ch)
	if routed(t, d, inetHost) || !d.exitNode().IsZero() {
		t.Fatal("the internet is still routed after the exit node left")
	}
}

func TestConfigRoutes(t *testing.T) {
	t.Setenv("TS_PORT", "")
	pfx := netip.MustParsePrefix
	for _, tc := range []struct {
		c    Config
		want string
	}{
		{Config{AdvertiseRoutes: []netip.Prefix{pfx("198.19.1.1/24")}}, "bits set beyond its length"},
		{Config{AdvertiseRoutes: []netip.Prefix{pfx("100.100.0.0/16")}}, "overlaps the tailnet"},
		{Config{AdvertiseRoutes: []netip.Prefix{pfx("100.0.0.0/8")}}, "overlaps the tailnet"},
		{Config{AdvertiseRoutes: []netip.Prefix{pfx("fd7a:115c:a1e0:ab12::/64")}}, "overlaps the tailnet"},
		{Config{AdvertiseRoutes: []netip.Prefix{{}}}, "invalid route"},
		{Config{AdvertiseRoutes: []netip.Prefix{exitRoute4}}, "together"},
		{Config{AdvertiseRoutes: []netip.Prefix{exitRoute4, exitRoute6}, ExitNode: "x"}, "cannot use an exit node and offer"},
		{Config{ExitNode: "198.18.0.1"}, "not a tailnet address"},
		{Config{ExitNode: "a b"}, "neither a node name"},
		{Config{TUN: "much-too-long-name"}, "TUN device name"},
		{Config{TUN: "a/b"}, "TUN device name"},
	} {
		_, err := tc.c.withDefaults()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.c, err, tc.want)
		}
	}
	for _, c := range []Config{
		{AdvertiseRoutes: []netip.Prefix{pfx("198.19.1.0/24"), pfx("2001:db8::/64"), exitRoute4, exitRoute6}},
		{ExitNode: "100.64.0.3", AcceptRoutes: true, ExitNodeAllowLANAccess: true},
		{ExitNode: "laptop.example.ts.net"},
		{TUN: "microlink0"},
	} {
		if _, err := c.withDefaults(); err != nil {
			t.Errorf("%+v: %v", c, err)
		}
	}
}

func TestSubtractPrefixes(t *testing.T) {
	holes := append(slices.Clip(reservedForExit), netip.MustParsePrefix("198.19.7.0/24"), netip.MustParsePrefix("2001:db8:1::/48"))
	for _, all := range []netip.Prefix{exitRoute4, exitRoute6} {
		got := subtractPrefixes(all, holes)
		rng := rand.New(rand.NewPCG(1, 2))
		check := func(a netip.Addr) {
			if !a.IsValid() {
				return
			}
			inHole := slices.ContainsFunc(holes, func(p netip.Prefix) bool { return p.Contains(a) })
			covered := slices.ContainsFunc(got, func(p netip.Prefix) bool { return p.Contains(a) })
			if inHole == covered {
				t.Errorf("%v: in a hole %v, covered %v", a, inHole, covered)
			}
		}
		for _, h := range holes {
			if h.Addr().Is4() != all.Addr().Is4() {
				continue
			}
			b := h.Addr().AsSlice()
			for i := h.Bits(); i < len(b)*8; i++ {
				b[i/8] |= 0x80 >> (i % 8)
			}
			last, _ := netip.AddrFromSlice(b)
			check(h.Addr())
			check(h.Addr().Prev())
			check(last)
			check(last.Next())
		}
		for range 20000 {
			var b [16]byte
			for i := range b {
				b[i] = byte(rng.Uint32())
			}
			a := netip.AddrFrom16(b)
			if all.Addr().Is4() {
				a = netip.AddrFrom4([4]byte(b[:4]))
			} else if rng.IntN(2) == 0 {
				copy(b[:], netip.MustParseAddr("2001:db8:1::").AsSlice()[:6])
				a = netip.AddrFrom16(b)
			}
			check(a)
		}
		if len(got) > 200 {
			t.Errorf("%d prefixes", len(got))
		}
	}
}

// TestRelayModeCloses: a userspace subnet router's relay goroutines end
// with the node.
func TestRelayModeCloses(t *testing.T) {
	before := runtime.NumGoroutine()
	n, err := New(Config{ControlURL: "http://127.0.0.1:1", Port: -1, Logger: quietLogger(),
		AdvertiseRoutes: []netip.Prefix{netip.MustParsePrefix("198.19.9.0/24")}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	n.Start(ctx)
	cancel()
	if n.relay == nil {
		t.Fatal("no relay for an advertised route in userspace mode")
	}
	n.Close()
	for deadline := time.Now().Add(5 * time.Second); runtime.NumGoroutine() > before; {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines before, %d after:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDNSForwardIgnoresUnusedExitNode: a peer that offers exit routes the
// node does not use does not swallow DNS queries to resolvers outside the
// tailnet; they go out through the host's network.
func TestDNSForwardIgnoresUnusedExitNode(t *testing.T) {
	n, _ := offlineNode(t)
	n.onMapResponse(routesNetmap(true))
	srv, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	go func() {
		buf := make([]byte, 512)
		n, from, err := srv.ReadFromUDPAddrPort(buf)
		if err == nil {
			buf[2] |= 0x80 // the query, answered
			srv.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	q := []byte{0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1} // "." A
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := n.dnsExchange(ctx, srv.LocalAddr().(*net.UDPAddr).AddrPort(), q, false); err != nil {
		t.Fatalf("DNS to a resolver outside the tailnet, with an exit node offered but not used: %v", err)
	}
}

// TestSortPrefixes: sortPrefixes orders as slices.SortFunc with
// comparePrefix does.
func TestSortPrefixes(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := 0; n < 200; n++ {
		var p []netip.Prefix
		for i := r.IntN(n + 1); i > 0; i-- {
			var a netip.Addr
			if r.IntN(2) == 0 {
				a = netip.AddrFrom4([4]byte{10, byte(r.IntN(3)), 0, byte(r.IntN(4))})
			} else {
				a = netip.AddrFrom16([16]byte{0xfd, 15: byte(r.IntN(4))})
			}
			p = append(p, netip.PrefixFrom(a, r.IntN(a.BitLen()+1)))
		}
		want := slices.Clone(p)
		slices.SortFunc(want, comparePrefix)
		sortPrefixes(p)
		if !slices.Equal(p, want) {
			t.Fatalf("got %v, want %v", p, want)
		}
	}
}
