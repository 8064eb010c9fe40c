package netmap

import (
	"reflect"
	"slices"

	"github.com/microlink-go/microlink/internal/tailcfg"
)

// Restore seeds the Map with peers and a DERP map remembered from an
// earlier run, so the node can reach known peers before the first netmap
// arrives. The peers replace the current ones; a nil dm keeps the DERP map.
// Restore does not count as the first message of a stream: the next
// message must still carry the self node, and its peer list replaces these.
func (m *Map) Restore(peers []Peer, dm *tailcfg.DERPMap) Changes {
	full := make([]*Peer, 0, len(peers))
	for i := range peers {
		p := peers[i]
		p.Addresses = clonePrefixes(p.Addresses)
		if slices.Equal(peers[i].AllowedIPs, peers[i].Addresses) {
			p.AllowedIPs = p.Addresses
		} else {
			p.AllowedIPs = clonePrefixes(p.AllowedIPs)
		}
		p.Endpoints = slices.Clone(p.Endpoints)
		p.KeyExpiry, p.LastSeen = utc(p.KeyExpiry), utc(p.LastSeen)
		p.OS = intern(p.OS)
		full = append(full, &p)
	}
	dm = cloneDERPMap(dm)
	m.mu.Lock()
	defer m.mu.Unlock()
	c := Changes{Full: true}
	if dm != nil {
		dm = mergeDERPMap(m.derpMap, dm)
		c.DERPMapChanged = !reflect.DeepEqual(dm, m.derpMap)
		m.derpMap = dm
	}
	m.replacePeers(full, &recorder{c: &c})
	return c
}
