package netmap

import (
	"net/netip"
	"strings"
)

// Resolve returns the tailnet addresses of the node (self or peer) named
// name, MagicDNS style: the FQDN with or without its trailing dot, or a
// short name, which is the first label of a MagicDNS name or, failing that,
// a Hostinfo hostname. Matching ignores case. The self node's suffix is
// tried first for short names, so "laptop" finds laptop.<tailnet> before a
// shared-in node of the same short name.
func (m *Map) Resolve(name string) ([]netip.Addr, bool) {
	k := nameKey(name)
	if k == "" {
		return nil, false
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.haveSelf && nameKey(m.self.Name) == k {
		return addrsOf(m.self.Addresses), true
	}
	if p := m.peers.byName[k]; p != nil {
		return addrsOf(unpackPrefixes(p.addrs)), true
	}
	if strings.Contains(k, ".") {
		return nil, false
	}
	// A short name: try it under our own suffix, then walk the peers.
	if m.haveSelf {
		self := nameKey(m.self.Name)
		if i := strings.IndexByte(self, '.'); i >= 0 {
			if self[:i] == k {
				return addrsOf(m.self.Addresses), true
			}
			if p := m.peers.byName[k+self[i:]]; p != nil {
				return addrsOf(unpackPrefixes(p.addrs)), true
			}
		}
	}
	// Several peers may share a short name; pick the lowest ID so the
	// answer does not depend on map order.
	var byLabel, byHost *entry
	for _, p := range m.peers.byID {
		if strings.EqualFold(firstLabel(p.name()), k) && (byLabel == nil || p.id < byLabel.id) {
			byLabel = p
		}
		if strings.EqualFold(p.hostname(), k) && (byHost == nil || p.id < byHost.id) {
			byHost = p
		}
	}
	if byLabel == nil {
		byLabel = byHost
	}
	if byLabel != nil {
		return addrsOf(unpackPrefixes(byLabel.addrs)), true
	}
	return nil, false
}

func addrsOf(pfxs []netip.Prefix) []netip.Addr {
	out := make([]netip.Addr, len(pfxs))
	for i, p := range pfxs {
		out[i] = p.Addr()
	}
	return out
}
