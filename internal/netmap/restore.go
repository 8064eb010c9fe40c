package netmap

import (
	"reflect"

	"github.com/microlink-go/microlink/internal/tailcfg"
)

// Restore seeds the Map with peers and a DERP map remembered from an
// earlier run, so the node can reach known peers before the first netmap
// arrives. The peers replace the current ones; a nil dm keeps the DERP map.
// Restore does not count as the first message of a stream: the next
// message must still carry the self node, and its peer list replaces these.
func (m *Map) Restore(peers []Peer, dm *tailcfg.DERPMap) Changes {
	full := make([]*entry, 0, len(peers))
	scratch := make([]byte, 0, 128)
	for i := range peers {
		full = append(full, newEntry(&peers[i], scratch))
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
