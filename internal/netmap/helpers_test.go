package netmap

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/microlink-go/microlink/internal/key"
	"github.com/microlink-go/microlink/internal/tailcfg"
)

// testKey returns a deterministic non-zero key for tests.
func testKey(kind byte, id tailcfg.NodeID) key.Public {
	var k key.Public
	k[0] = kind
	k[1] = byte(id)
	k[2] = byte(id >> 8)
	k[3] = byte(id >> 16)
	k[31] = 1
	return k
}

func nodeKey(id tailcfg.NodeID) key.NodePublic   { return key.NodePublic(testKey('n', id)) }
func discoKey(id tailcfg.NodeID) key.DiscoPublic { return key.DiscoPublic(testKey('d', id)) }

func v4(id tailcfg.NodeID) netip.Addr {
	return netip.AddrFrom4([4]byte{100, 64 + byte(id>>16), byte(id >> 8), byte(id)})
}

func v6(id tailcfg.NodeID) netip.Addr {
	return netip.AddrFrom16([16]byte{0xfd, 0x7a, 0x11, 0x5c, 0xa1, 0xe0, 13: byte(id >> 16), 14: byte(id >> 8), 15: byte(id)})
}

// testNode returns a typical peer node.
func testNode(id tailcfg.NodeID) *tailcfg.Node {
	online := true
	return &tailcfg.Node{
		ID:        id,
		StableID:  fmt.Sprintf("n%dCNTRL", id),
		Name:      fmt.Sprintf("host%d.example.ts.net.", id),
		User:      1,
		Key:       nodeKey(id),
		DiscoKey:  discoKey(id),
		KeyExpiry: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC),
		Addresses: []netip.Prefix{netip.PrefixFrom(v4(id), 32), netip.PrefixFrom(v6(id), 128)},
		Endpoints: []netip.AddrPort{netip.MustParseAddrPort("198.51.100.4:41641"), netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 168, 1, byte(id)}), 41641)},
		HomeDERP:  1,
		Hostinfo:  &tailcfg.Hostinfo{Hostname: fmt.Sprintf("host%d", id), OS: "linux"},
		Online:    &online,
		Cap:       115,
	}
}

func selfNode() *tailcfg.Node {
	n := testNode(1000)
	n.Name = "me.example.ts.net."
	n.MachineAuthorized = true
	return n
}

func mustApply(t *testing.T, m *Map, resp *tailcfg.MapResponse) Changes {
	t.Helper()
	c, err := m.Apply(resp)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	checkInvariants(t, m)
	return c
}

// newTestMap returns a Map that has applied a full message with peers ids.
func newTestMap(t *testing.T, ids ...tailcfg.NodeID) *Map {
	t.Helper()
	m := New(Options{})
	resp := &tailcfg.MapResponse{Node: selfNode()}
	for _, id := range ids {
		resp.Peers = append(resp.Peers, testNode(id))
	}
	mustApply(t, m, resp)
	return m
}

func peerIDs(m *Map) []tailcfg.NodeID {
	var ids []tailcfg.NodeID
	for _, p := range m.Peers() {
		ids = append(ids, p.ID)
	}
	return ids
}

// checkInvariants verifies that every index entry points to a live peer that
// has the indexed attribute, and that every peer whose attributes are unique
// is found through every index.
func checkInvariants(t testing.TB, m *Map) {
	t.Helper()
	m.mu.RLock()
	defer m.mu.RUnlock()
	x := &m.peers
	live := func(what string, p *Peer) {
		if p == nil || x.byID[p.ID] != p {
			t.Fatalf("%s index points to a peer not in byID: %+v", what, p)
		}
	}
	for id, p := range x.byID {
		if p.ID != id {
			t.Fatalf("byID[%d] holds peer %d", id, p.ID)
		}
		if !p.HasOwnAllowedIPs() && len(p.AllowedIPs) != len(p.Addresses) {
			t.Fatalf("peer %d AllowedIPs/Addresses mismatch", id)
		}
	}
	for k, p := range x.byKey {
		live("key", p)
		if p.Key != k {
			t.Fatalf("byKey entry mismatch")
		}
	}
	for k, p := range x.byDisco {
		live("disco", p)
		if p.DiscoKey != k {
			t.Fatalf("byDisco entry mismatch")
		}
	}
	for a, p := range x.byIP4 {
		live("ip4", p)
		if !hasAddr(p.Addresses, netip.AddrFrom4(a)) {
			t.Fatalf("byIP4 %v points to peer %d without it", a, p.ID)
		}
	}
	for a, p := range x.byIP6 {
		live("ip6", p)
		ad := netip.AddrFrom16(a)
		if !hasAddr(p.Addresses, ad) {
			t.Fatalf("byIP6 %v points to peer %d without it", ad, p.ID)
		}
	}
	for n, p := range x.byName {
		live("name", p)
		if nameKey(p.Name) != n {
			t.Fatalf("byName %q points to %q", n, p.Name)
		}
	}
	for id, p := range x.routers {
		live("routers", p)
		if id != p.ID || !p.HasOwnAllowedIPs() {
			t.Fatalf("routers entry %d wrong", id)
		}
	}
	// Peers with unique attributes must be reachable.
	keys := map[key.NodePublic]int{}
	discos := map[key.DiscoPublic]int{}
	addrs := map[netip.Addr]int{}
	names := map[string]int{}
	for _, p := range x.byID {
		keys[p.Key]++
		discos[p.DiscoKey]++
		for _, a := range p.Addresses {
			addrs[a.Addr().Unmap()]++
		}
		names[nameKey(p.Name)]++
	}
	for _, p := range x.byID {
		if !p.Key.IsZero() && keys[p.Key] == 1 && x.byKey[p.Key] != p {
			t.Fatalf("peer %d not indexed by key", p.ID)
		}
		if !p.DiscoKey.IsZero() && discos[p.DiscoKey] == 1 && x.byDisco[p.DiscoKey] != p {
			t.Fatalf("peer %d not indexed by disco key", p.ID)
		}
		for _, a := range p.Addresses {
			ad := a.Addr().Unmap()
			if (ad.Is4() || ad.Is6()) && addrs[ad] == 1 && x.lookupIP(ad) != p {
				t.Fatalf("peer %d not indexed by %v", p.ID, ad)
			}
		}
		if n := nameKey(p.Name); n != "" && names[n] == 1 && x.byName[n] != p {
			t.Fatalf("peer %d not indexed by name", p.ID)
		}
		if p.HasOwnAllowedIPs() && x.routers[p.ID] != p {
			t.Fatalf("router %d not indexed", p.ID)
		}
	}
}
