package netmap

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
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
	c, err := applyResp(m, resp)
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

// applyResp applies resp the way the node does: its peers encoded as JSON
// and read by a Decoder. The rest of resp is used as it is: encoding/json
// reads it in the Decoder, and a round trip through JSON would lose the
// difference between nil and empty lists that some tests need.
func applyResp(m *Map, resp *tailcfg.MapResponse) (Changes, error) {
	b, err := json.Marshal(struct {
		Peers, PeersChanged []*tailcfg.Node `json:",omitempty"`
	}{resp.Peers, resp.PeersChanged})
	if err != nil {
		panic(err)
	}
	var d Decoder
	msg, err := d.Decode(bytes.NewReader(b))
	if err != nil {
		panic(fmt.Sprintf("decoding %s: %v", b, err))
	}
	rest := *resp
	rest.Peers, rest.PeersChanged = nil, nil
	msg.MapResponse = &rest
	return m.Apply(msg)
}

func peerByKey(m *Map, k key.NodePublic) (Peer, bool) {
	return findPeer(m, func(p *Peer) bool { return p.Key == k })
}

func peerByDisco(m *Map, k key.DiscoPublic) (Peer, bool) {
	return findPeer(m, func(p *Peer) bool { return p.DiscoKey == k })
}

func findPeer(m *Map, match func(*Peer) bool) (found Peer, ok bool) {
	m.ForEachPeer(func(p *Peer) bool {
		if match(p) {
			found, ok = *p, true
		}
		return !ok
	})
	return found, ok
}

// refPeer converts a wire node as encoding/json decodes it, the way the
// Decoder must: the reference the decoding tests compare with.
func refPeer(n *tailcfg.Node) Peer {
	p := Peer{
		ID:              n.ID,
		StableID:        n.StableID,
		Name:            n.Name,
		User:            n.User,
		Key:             n.Key,
		DiscoKey:        n.DiscoKey,
		KeyExpiry:       utc(n.KeyExpiry),
		HomeDERP:        n.HomeRegion(),
		Expired:         n.Expired,
		IsWireGuardOnly: n.IsWireGuardOnly,
	}
	if n.LastSeen != nil {
		p.LastSeen = utc(*n.LastSeen)
	}
	if n.Online != nil {
		p.Online = *n.Online
	}
	if hi := n.Hostinfo; hi != nil {
		p.OS, p.Hostname = hi.OS, hi.Hostname
	}
	p.Tags = internTags(n.Tags)
	p.Addresses = canonPrefixes(n.Addresses)
	p.AllowedIPs = p.Addresses
	if allowed := canonPrefixes(n.EffectiveAllowedIPs()); !slices.Equal(allowed, p.Addresses) {
		p.AllowedIPs = allowed
	}
	if len(n.Endpoints) > 0 {
		p.Endpoints = make([]netip.AddrPort, len(n.Endpoints))
		for i, ap := range n.Endpoints {
			if ap.Addr().IsValid() {
				p.Endpoints[i] = ap
			}
		}
	}
	return p
}

// canonPrefixes clones s with invalid prefixes made zero, as stored.
func canonPrefixes(s []netip.Prefix) []netip.Prefix {
	if len(s) == 0 {
		return nil
	}
	out := make([]netip.Prefix, len(s))
	for i, p := range s {
		if p.IsValid() {
			out[i] = p
		}
	}
	return out
}

// checkInvariants verifies that every index entry points to a live peer that
// has the indexed attribute, and that every peer whose attributes are unique
// is found through every index.
func checkInvariants(t testing.TB, m *Map) {
	t.Helper()
	m.mu.RLock()
	defer m.mu.RUnlock()
	x := &m.peers
	live := func(what string, p *entry) {
		if p == nil || x.byID[p.id] != p {
			t.Fatalf("%s index points to a peer not in byID: %+v", what, p)
		}
	}
	for id, p := range x.byID {
		if p.id != id {
			t.Fatalf("byID[%d] holds peer %d", id, p.id)
		}
		if q := p.peer(); q.HasOwnAllowedIPs() != p.ownAllowedIPs() {
			t.Fatalf("peer %d AllowedIPs/Addresses mismatch", id)
		}
		if int(p.nameLen)+int(p.stableLen) > len(p.text) {
			t.Fatalf("peer %d text lengths out of range", id)
		}
	}
	for a, p := range x.byIP4 {
		live("ip4", p)
		if !hasAddr(p.addrs, netip.AddrFrom4(a)) {
			t.Fatalf("byIP4 %v points to peer %d without it", a, p.id)
		}
	}
	for a, p := range x.byIP6 {
		live("ip6", p)
		ad := netip.AddrFrom16(a)
		if !hasAddr(p.addrs, ad) {
			t.Fatalf("byIP6 %v points to peer %d without it", ad, p.id)
		}
	}
	for n, p := range x.byName {
		live("name", p)
		if nameKey(p.name()) != n {
			t.Fatalf("byName %q points to %q", n, p.name())
		}
	}
	for id, p := range x.routers {
		live("routers", p)
		if id != p.id || !p.ownAllowedIPs() {
			t.Fatalf("routers entry %d wrong", id)
		}
	}
	// Peers with unique attributes must be reachable.
	addrs := map[netip.Addr]int{}
	names := map[string]int{}
	for _, p := range x.byID {
		for _, a := range unpackPrefixes(p.addrs) {
			addrs[a.Addr().Unmap()]++
		}
		names[nameKey(p.name())]++
	}
	for _, p := range x.byID {
		for _, a := range unpackPrefixes(p.addrs) {
			ad := a.Addr().Unmap()
			if (ad.Is4() || ad.Is6()) && addrs[ad] == 1 && x.lookupIP(ad) != p {
				t.Fatalf("peer %d not indexed by %v", p.id, ad)
			}
		}
		if n := nameKey(p.name()); n != "" && names[n] == 1 && x.byName[n] != p {
			t.Fatalf("peer %d not indexed by name", p.id)
		}
		if p.ownAllowedIPs() && x.routers[p.id] != p {
			t.Fatalf("router %d not indexed", p.id)
		}
	}
}
