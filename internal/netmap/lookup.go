package netmap

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/microlink-go/microlink/internal/key"
	"github.com/microlink-go/microlink/internal/tailcfg"
)

// Self returns the self node and whether one has been received.
func (m *Map) Self() (Self, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.self, m.haveSelf
}

// SelfKeyExpiry returns when the self node key expires; zero means never
// or not yet known. Compare it with Now, not time.Now.
func (m *Map) SelfKeyExpiry() time.Time {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.self.KeyExpiry
}

// NumPeers returns the number of peers.
func (m *Map) NumPeers() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.peers.byID)
}

// Peers returns a snapshot of all peers sorted by name, then ID.
func (m *Map) Peers() []Peer {
	m.mu.RLock()
	defer m.mu.RUnlock()
	es := make([]*entry, 0, len(m.peers.byID))
	for _, p := range m.peers.byID {
		es = append(es, p)
	}
	// Sorting pointers shares the code of the map's other sorts.
	slices.SortFunc(es, func(a, b *entry) int {
		return cmp.Or(strings.Compare(a.name(), b.name()), cmp.Compare(a.id, b.id))
	})
	out := make([]Peer, len(es))
	for i, e := range es {
		out[i] = e.peer()
	}
	return out
}

// ForEachPeer calls f for every peer, in no particular order, while holding
// the read lock: f must not call into the Map. It stops when f returns false.
// It lets callers walk a large netmap without building a list of it: p is
// valid only during the call, though the slices in it may be kept.
func (m *Map) ForEachPeer(f func(p *Peer) bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var p Peer
	for _, e := range m.peers.byID {
		p = e.peer()
		if !f(&p) {
			return
		}
	}
}

func (m *Map) get(e *entry) (Peer, bool) {
	if e == nil {
		return Peer{}, false
	}
	return e.peer(), true
}

// PeerByID returns the peer with the given node ID.
func (m *Map) PeerByID(id tailcfg.NodeID) (Peer, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.get(m.peers.byID[id])
}

// PeerByKey returns the peer with the given node key. It walks the peers:
// nothing looks peers up by key often enough to keep an index for it.
func (m *Map) PeerByKey(k key.NodePublic) (Peer, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, p := range m.peers.byID {
		if p.key == k {
			return p.peer(), true
		}
	}
	return Peer{}, false
}

// PeerByIP returns the peer whose own tailnet addresses include a.
func (m *Map) PeerByIP(a netip.Addr) (Peer, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.get(m.peers.lookupIP(a))
}

// PeerForDst returns the peer whose AllowedIPs hold the longest prefix
// containing dst: the peer owning dst as its own address, else the subnet
// router or exit node with the most specific route.
func (m *Map) PeerForDst(dst netip.Addr) (Peer, bool) {
	dst = dst.Unmap()
	m.mu.RLock()
	defer m.mu.RUnlock()
	if p := m.peers.lookupIP(dst); p != nil && containsAddr(p.allowed, dst) {
		return p.peer(), true
	}
	var best *entry
	bestBits := -1
	for _, p := range m.peers.routers {
		for rest := p.allowed; rest != ""; {
			var pfx netip.Prefix
			pfx, rest = nextPrefix(rest)
			if pfx.Bits() > bestBits && pfx.Contains(dst) {
				best, bestBits = p, pfx.Bits()
			}
		}
	}
	return m.get(best)
}

// containsAddr reports whether one of the packed prefixes contains a.
func containsAddr(packed string, a netip.Addr) bool {
	for packed != "" {
		var p netip.Prefix
		p, packed = nextPrefix(packed)
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// DERPMap returns a copy of the current DERP map, or nil if none arrived.
func (m *Map) DERPMap() *tailcfg.DERPMap {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return cloneDERPMap(m.derpMap)
}

// FilterRules returns the effective packet filter: the rules of all named
// filters concatenated in name order. An empty result means deny all. The
// slice is shared and must not be modified.
func (m *Map) FilterRules() []tailcfg.FilterRule {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.filter
}

// DNS returns the DNS configuration, or nil. It is shared and must not be
// modified.
func (m *Map) DNS() *tailcfg.DNSConfig {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.dns
}

// Domain returns the tailnet name.
func (m *Map) Domain() string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.domain
}

// UserProfile returns the profile of a user.
func (m *Map) UserProfile(id tailcfg.UserID) (tailcfg.UserProfile, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	up, ok := m.profiles[id]
	return up, ok
}

// NextPeerExpiry returns the earliest key expiry among peers not yet expired
// at control-adjusted now, or zero if none will expire; callers can arm a
// timer to re-check expiry then. It walks all peers.
func (m *Map) NextPeerExpiry() time.Time {
	m.mu.RLock()
	defer m.mu.RUnlock()
	now := m.now().Add(m.skew)
	var next time.Time
	for _, p := range m.peers.byID {
		if p.expiredAt(now) || (p.keyExpirySec == zeroSec && p.keyExpiryNsec == 0) {
			continue
		}
		if t := p.keyExpiry(); next.IsZero() || t.Before(next) {
			next = t
		}
	}
	return next
}
