package wireguard

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/microlink-go/microlink/internal/key"
)

func TestUpdatePeersKeepsSessions(t *testing.T) {
	w, _, a, b := setupPair(t)
	a.dev.SendTo(b.pub, ipv4Packet(a.addr, b.addr, 60, 1))
	w.pump(t)
	other := newWire().newNode(t, newFakeClock(), "100.64.0.9", nil)
	bRoute := PeerConfig{Key: b.pub, AllowedIPs: []netip.Prefix{netip.PrefixFrom(b.addr, 32)}}
	// An added peer and an unchanged b: the session survives.
	a.dev.UpdatePeers([]PeerConfig{bRoute, {Key: other.pub, AllowedIPs: []netip.Prefix{netip.PrefixFrom(other.addr, 32)}}}, nil)
	a.dev.SendPacket(ipv4Packet(a.addr, b.addr, 60, 2))
	w.pump(t)
	if n := len(w.sentOfType(TypeInitiation)); n != 1 {
		t.Fatalf("session lost on UpdatePeers: %d initiations", n)
	}
	if s := a.dev.Stats(); s.Peers != 2 {
		t.Fatalf("stats %+v", s)
	}
	// b gains a subnet route, still with its session.
	sub := netip.MustParsePrefix("10.9.0.0/16")
	bRoute.AllowedIPs = append(bRoute.AllowedIPs, sub)
	a.dev.UpdatePeers([]PeerConfig{bRoute}, nil)
	if err := a.dev.SendPacket(ipv4Packet(a.addr, netip.MustParseAddr("10.9.1.1"), 60, 3)); err != nil {
		t.Fatalf("send to b's new route: %v", err)
	}
	w.pump(t)
	if n := len(w.sentOfType(TypeInitiation)); n != 1 {
		t.Fatalf("session lost on a route change: %d initiations", n)
	}
	// Removing b drops its routes, its session and its index entries.
	a.dev.UpdatePeers(nil, []key.NodePublic{b.pub, key.NewPrivate().NodePublic()})
	if err := a.dev.SendPacket(ipv4Packet(a.addr, b.addr, 60, 4)); err != ErrNoRoute {
		t.Fatalf("send to a removed peer's address: %v", err)
	}
	if err := a.dev.SendTo(b.pub, ipv4Packet(a.addr, b.addr, 60, 4)); err != ErrUnknownPeer {
		t.Fatalf("send to removed peer: %v", err)
	}
	b.dev.SendTo(a.pub, ipv4Packet(b.addr, a.addr, 60, 5))
	w.pump(t)
	if len(a.delivered()) != 0 {
		t.Fatal("removed peer's packet delivered")
	}
	if len(a.dev.index) != 0 {
		t.Fatalf("index table holds %d entries after removal", len(a.dev.index))
	}
}

// TestRouteTableIncremental checks, over random changes, that a table
// kept up to date peer by peer routes like one built from scratch.
func TestRouteTableIncremental(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	prefixes := []netip.Prefix{
		netip.MustParsePrefix("100.64.0.1/32"), netip.MustParsePrefix("100.64.0.2/32"),
		netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("10.1.0.0/16"),
		netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("fd7a:115c:a1e0::1/128"),
		netip.MustParsePrefix("fd00::/8"), netip.MustParsePrefix("::ffff:10.2.0.0/112"),
	}
	probes := []netip.Addr{
		netip.MustParseAddr("100.64.0.1"), netip.MustParseAddr("100.64.0.2"), netip.MustParseAddr("10.1.2.3"),
		netip.MustParseAddr("10.2.3.4"), netip.MustParseAddr("8.8.8.8"), netip.MustParseAddr("fd7a:115c:a1e0::1"),
		netip.MustParseAddr("fd00::5"), netip.MustParseAddr("2001:db8::1"),
	}
	d := &Device{peers: map[key.NodePublic]*peer{}, index: map[uint32]indexEntry{}}
	d.routes = newRouteTable(d.peers)
	keys := make([]key.NodePublic, 6)
	for i := range keys {
		keys[i] = key.NewPrivate().NodePublic()
	}
	for step := range 2000 {
		var upsert []PeerConfig
		var gone []key.NodePublic
		for range 1 + rng.IntN(3) {
			k := keys[rng.IntN(len(keys))]
			if rng.IntN(3) == 0 {
				gone = append(gone, k)
				continue
			}
			// Each peer mostly owns distinct prefixes; sometimes two share one.
			var allowed []netip.Prefix
			for range rng.IntN(3) {
				allowed = append(allowed, prefixes[rng.IntN(len(prefixes))])
			}
			upsert = append(upsert, PeerConfig{Key: k, AllowedIPs: allowed})
		}
		d.UpdatePeers(upsert, gone)
		for _, a := range probes {
			got, want := d.routes.lookup(a), owners(d.peers, a)
			if (got == nil) != (len(want) == 0) || (got != nil && !want[got]) {
				t.Fatalf("step %d: %v routes to %v, want one of %v", step, a, got, want)
			}
		}
	}
}

// owners returns the peers whose allowed IPs hold a with the longest
// prefix, by brute force.
func owners(peers map[key.NodePublic]*peer, a netip.Addr) map[*peer]bool {
	best := -1
	out := map[*peer]bool{}
	for _, p := range peers {
		for _, pfx := range p.allowed {
			pfx = canon(pfx)
			if !pfx.Contains(a) || pfx.Bits() < best {
				continue
			}
			if pfx.Bits() > best {
				best = pfx.Bits()
				clear(out)
			}
			out[p] = true
		}
	}
	return out
}

func TestUpdateOnePeerAllocs(t *testing.T) {
	_, _, a, _ := setupPair(t)
	var peers []PeerConfig
	for i := range 1000 {
		peers = append(peers, PeerConfig{Key: key.NewPrivate().NodePublic(), AllowedIPs: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 70, byte(i >> 8), byte(i)}), 32)}})
	}
	a.dev.SetPeers(peers)
	one := []PeerConfig{peers[5]}
	allocs := testing.AllocsPerRun(50, func() { a.dev.UpdatePeers(one, nil) })
	if allocs > 2 {
		t.Fatalf("%v allocations to update one of 1000 peers", allocs)
	}
}
