package netmap

import (
	"net/netip"
	"strings"

	"github.com/microlink-go/microlink/internal/tailcfg"
)

// peerIndex holds the peers by ID and the lookup indexes over them. An index
// entry belongs to the peer it points to; when two peers share a key or an
// address (a control bug), the one indexed last wins and the entry goes away
// with it.
type peerIndex struct {
	byID   map[tailcfg.NodeID]*entry
	byIP4  map[[4]byte]*entry
	byIP6  map[[16]byte]*entry
	byName map[string]*entry // lower-case FQDN without the trailing dot
	// routers are the peers whose AllowedIPs differ from their Addresses.
	routers map[tailcfg.NodeID]*entry
	// clashes counts index entries taken over from another peer. While it
	// is zero no attribute is shared, and removing a peer's entries never
	// has to look for another owner.
	clashes int
}

func newPeerIndex(n int) peerIndex {
	return peerIndex{
		byID:    make(map[tailcfg.NodeID]*entry, n),
		byIP4:   make(map[[4]byte]*entry, n),
		byIP6:   make(map[[16]byte]*entry, n),
		byName:  make(map[string]*entry, n),
		routers: make(map[tailcfg.NodeID]*entry),
	}
}

// nameKey returns the index key for a MagicDNS name: lower case, without a
// trailing dot. For the usual lower-case name it allocates nothing.
func nameKey(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, "."))
}

// add inserts a new peer, replacing any peer with the same ID.
func (x *peerIndex) add(p *entry) {
	if old := x.byID[p.id]; old != nil {
		x.remove(old)
	}
	x.byID[p.id] = p
	x.indexAddrs(p)
	x.indexName(p)
	x.indexRoutes(p)
}

func (x *peerIndex) remove(p *entry) {
	if x.byID[p.id] == p {
		delete(x.byID, p.id)
	}
	x.unindexAddrs(p)
	x.unindexName(p)
	delete(x.routers, p.id)
}

// update replaces the contents of the indexed peer p with np (same ID),
// touching only the indexes whose attributes changed.
func (x *peerIndex) update(p *entry, np *entry) {
	addrsChanged := p.addrs != np.addrs
	nameChanged := p.name() != np.name()
	if addrsChanged {
		x.unindexAddrs(p)
	}
	if nameChanged {
		x.unindexName(p)
	}
	*p = *np
	if addrsChanged {
		x.indexAddrs(p)
	}
	if nameChanged {
		x.indexName(p)
	}
	x.indexRoutes(p)
}

// set points m[k] at p, counting a clash if another peer held the entry.
func set[K comparable](x *peerIndex, m map[K]*entry, k K, p *entry) {
	if q := m[k]; q != nil && q != p {
		x.clashes++
	}
	m[k] = p
}

// unset removes m[k] if p holds it. If peers have clashed, the entry is
// handed to another peer that has the attribute (has reports that).
func unset[K comparable](x *peerIndex, m map[K]*entry, k K, p *entry, has func(*entry) bool) {
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

func (x *peerIndex) indexAddrs(p *entry) {
	for rest := p.addrs; rest != ""; {
		var pfx netip.Prefix
		pfx, rest = nextPrefix(rest)
		a := pfx.Addr().Unmap()
		if a.Is4() {
			set(x, x.byIP4, a.As4(), p)
		} else if a.Is6() {
			set(x, x.byIP6, a.As16(), p)
		}
	}
}

func (x *peerIndex) unindexAddrs(p *entry) {
	for rest := p.addrs; rest != ""; {
		var pfx netip.Prefix
		pfx, rest = nextPrefix(rest)
		a := pfx.Addr().Unmap()
		has := func(q *entry) bool { return hasAddr(q.addrs, a) }
		if a.Is4() {
			unset(x, x.byIP4, a.As4(), p, has)
		} else if a.Is6() {
			unset(x, x.byIP6, a.As16(), p, has)
		}
	}
}

// hasAddr reports whether the packed prefixes hold address a.
func hasAddr(packed string, a netip.Addr) bool {
	for packed != "" {
		var p netip.Prefix
		p, packed = nextPrefix(packed)
		if p.Addr().Unmap() == a {
			return true
		}
	}
	return false
}

func (x *peerIndex) indexName(p *entry) {
	if k := nameKey(p.name()); k != "" {
		set(x, x.byName, k, p)
	}
}

func (x *peerIndex) unindexName(p *entry) {
	k := nameKey(p.name())
	unset(x, x.byName, k, p, func(q *entry) bool { return nameKey(q.name()) == k })
}

func (x *peerIndex) indexRoutes(p *entry) {
	if p.ownAllowedIPs() {
		x.routers[p.id] = p
	} else {
		delete(x.routers, p.id)
	}
}

// lookupIP returns the peer that owns address a.
func (x *peerIndex) lookupIP(a netip.Addr) *entry {
	a = a.Unmap()
	if a.Is4() {
		return x.byIP4[a.As4()]
	}
	if a.Is6() {
		return x.byIP6[a.As16()]
	}
	return nil
}
