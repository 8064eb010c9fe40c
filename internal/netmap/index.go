package netmap

import (
	"net/netip"
	"strings"

	"github.com/microlink-go/microlink/internal/key"
	"github.com/microlink-go/microlink/internal/tailcfg"
)

// peerIndex holds the peers by ID and the lookup indexes over them. An index
// entry belongs to the peer it points to; when two peers share a key or an
// address (a control bug), the one indexed last wins and the entry goes away
// with it.
type peerIndex struct {
	byID    map[tailcfg.NodeID]*Peer
	byKey   map[key.NodePublic]*Peer
	byDisco map[key.DiscoPublic]*Peer
	byIP4   map[[4]byte]*Peer
	byIP6   map[[16]byte]*Peer
	byName  map[string]*Peer // lower-case FQDN without the trailing dot
	// routers are the peers whose AllowedIPs differ from their Addresses.
	routers map[tailcfg.NodeID]*Peer
	// clashes counts index entries taken over from another peer. While it
	// is zero no attribute is shared, and removing a peer's entries never
	// has to look for another owner.
	clashes int
}

func newPeerIndex(n int) peerIndex {
	return peerIndex{
		byID:    make(map[tailcfg.NodeID]*Peer, n),
		byKey:   make(map[key.NodePublic]*Peer, n),
		byDisco: make(map[key.DiscoPublic]*Peer, n),
		byIP4:   make(map[[4]byte]*Peer, n),
		byIP6:   make(map[[16]byte]*Peer, n),
		byName:  make(map[string]*Peer, n),
		routers: make(map[tailcfg.NodeID]*Peer),
	}
}

// nameKey returns the index key for a MagicDNS name: lower case, without a
// trailing dot. For the usual lower-case name it allocates nothing.
func nameKey(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, "."))
}

// add inserts a new peer, replacing any peer with the same ID.
func (x *peerIndex) add(p *Peer) {
	if old := x.byID[p.ID]; old != nil {
		x.remove(old)
	}
	x.byID[p.ID] = p
	x.indexKey(p)
	x.indexDisco(p)
	x.indexAddrs(p)
	x.indexName(p)
	x.indexRoutes(p)
}

func (x *peerIndex) remove(p *Peer) {
	if x.byID[p.ID] == p {
		delete(x.byID, p.ID)
	}
	x.unindexKey(p)
	x.unindexDisco(p)
	x.unindexAddrs(p)
	x.unindexName(p)
	delete(x.routers, p.ID)
}

// update replaces the contents of the indexed peer p with np (same ID),
// touching only the indexes whose attributes changed.
func (x *peerIndex) update(p *Peer, np *Peer) {
	keyChanged := p.Key != np.Key
	discoChanged := p.DiscoKey != np.DiscoKey
	addrsChanged := !sameBacking(p.Addresses, np.Addresses)
	nameChanged := p.Name != np.Name
	if keyChanged {
		x.unindexKey(p)
	}
	if discoChanged {
		x.unindexDisco(p)
	}
	if addrsChanged {
		x.unindexAddrs(p)
	}
	if nameChanged {
		x.unindexName(p)
	}
	*p = *np
	if keyChanged {
		x.indexKey(p)
	}
	if discoChanged {
		x.indexDisco(p)
	}
	if addrsChanged {
		x.indexAddrs(p)
	}
	if nameChanged {
		x.indexName(p)
	}
	x.indexRoutes(p)
}

// set points m[k] at p, counting a clash if another peer held the entry.
func set[K comparable](x *peerIndex, m map[K]*Peer, k K, p *Peer) {
	if q := m[k]; q != nil && q != p {
		x.clashes++
	}
	m[k] = p
}

// unset removes m[k] if p holds it. If peers have clashed, the entry is
// handed to another peer that has the attribute (has reports that).
func unset[K comparable](x *peerIndex, m map[K]*Peer, k K, p *Peer, has func(*Peer) bool) {
	if m[k] != p {
		return
	}
	delete(m, k)
	if x.clashes == 0 {
		return
	}
	for _, q := range x.byID {
		if q != p && has(q) {
			m[k] = q
			return
		}
	}
}

func (x *peerIndex) indexKey(p *Peer) {
	if !p.Key.IsZero() {
		set(x, x.byKey, p.Key, p)
	}
}

func (x *peerIndex) unindexKey(p *Peer) {
	k := p.Key
	unset(x, x.byKey, k, p, func(q *Peer) bool { return q.Key == k })
}

func (x *peerIndex) indexDisco(p *Peer) {
	if !p.DiscoKey.IsZero() {
		set(x, x.byDisco, p.DiscoKey, p)
	}
}

func (x *peerIndex) unindexDisco(p *Peer) {
	k := p.DiscoKey
	unset(x, x.byDisco, k, p, func(q *Peer) bool { return q.DiscoKey == k })
}

func (x *peerIndex) indexAddrs(p *Peer) {
	for _, pfx := range p.Addresses {
		a := pfx.Addr().Unmap()
		if a.Is4() {
			set(x, x.byIP4, a.As4(), p)
		} else if a.Is6() {
			set(x, x.byIP6, a.As16(), p)
		}
	}
}

func (x *peerIndex) unindexAddrs(p *Peer) {
	for _, pfx := range p.Addresses {
		a := pfx.Addr().Unmap()
		has := func(q *Peer) bool { return hasAddr(q.Addresses, a) }
		if a.Is4() {
			unset(x, x.byIP4, a.As4(), p, has)
		} else if a.Is6() {
			unset(x, x.byIP6, a.As16(), p, has)
		}
	}
}

func hasAddr(pfxs []netip.Prefix, a netip.Addr) bool {
	for _, p := range pfxs {
		if p.Addr().Unmap() == a {
			return true
		}
	}
	return false
}

func (x *peerIndex) indexName(p *Peer) {
	if k := nameKey(p.Name); k != "" {
		set(x, x.byName, k, p)
	}
}

func (x *peerIndex) unindexName(p *Peer) {
	k := nameKey(p.Name)
	unset(x, x.byName, k, p, func(q *Peer) bool { return nameKey(q.Name) == k })
}

func (x *peerIndex) indexRoutes(p *Peer) {
	if p.HasOwnAllowedIPs() {
		x.routers[p.ID] = p
	} else {
		delete(x.routers, p.ID)
	}
}

// lookupIP returns the peer that owns address a.
func (x *peerIndex) lookupIP(a netip.Addr) *Peer {
	a = a.Unmap()
	if a.Is4() {
		return x.byIP4[a.As4()]
	}
	if a.Is6() {
		return x.byIP6[a.As16()]
	}
	return nil
}
