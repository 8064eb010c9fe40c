package netmap

import (
	"cmp"
	"maps"
	"reflect"
	"slices"
	"time"

	"github.com/microlink-go/microlink/internal/tailcfg"
)

// Apply applies one message of the map stream. The first non-keep-alive
// message after New or StartStream must carry the self node; otherwise Apply
// returns ErrNoSelfNode and changes nothing.
//
// A non-empty Peers list replaces all peers, and the other peer deltas of
// that message (PeersChanged, PeersRemoved, PeersChangedPatch,
// PeerSeenChange, OnlineChange) are then ignored. Otherwise removals are
// applied first, then upserts, seen and online changes, and patches.
//
// Apply takes ownership of resp's DERPMap, DNSConfig, filter rules and user
// profiles; the caller must not modify resp afterwards.
func (m *Map) Apply(resp *tailcfg.MapResponse) (Changes, error) {
	if resp == nil {
		return Changes{}, nil
	}
	var d decoded
	if !resp.KeepAlive {
		d.full = compactPeers(resp.Peers)
		d.hasFull = len(resp.Peers) > 0
		d.changed = compactPeers(resp.PeersChanged)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.applyLocked(resp, &d)
}

// decoded holds the peers of a message already converted to compact form,
// so the conversion happens outside the lock.
type decoded struct {
	full    []*Peer // from Peers
	hasFull bool    // Peers was non-empty (even if all its entries were null)
	changed []*Peer // from PeersChanged
}

func compactPeers(nodes []*tailcfg.Node) []*Peer {
	if len(nodes) == 0 {
		return nil
	}
	out := make([]*Peer, 0, len(nodes))
	for _, n := range nodes {
		if n != nil {
			out = append(out, compactPeer(n))
		}
	}
	return out
}

func (m *Map) applyLocked(resp *tailcfg.MapResponse, d *decoded) (Changes, error) {
	var c Changes
	if ct := resp.ControlTime; ct != nil && !ct.IsZero() {
		m.skew = ct.Sub(m.now())
	}
	if resp.KeepAlive {
		return c, nil
	}
	first := m.wantFull
	if first && resp.Node == nil {
		return c, ErrNoSelfNode
	}
	m.wantFull = false

	if resp.Node != nil {
		s := selfFromNode(resp.Node)
		if !m.haveSelf || !reflect.DeepEqual(s, m.self) {
			c.SelfChanged = true
		}
		m.self, m.haveSelf = s, true
	}
	if resp.DERPMap != nil {
		dm := mergeDERPMap(m.derpMap, resp.DERPMap)
		if !reflect.DeepEqual(dm, m.derpMap) {
			c.DERPMapChanged = true
		}
		m.derpMap = dm
	}
	if first && len(m.filters) > 0 {
		m.filters = nil
		m.filter = nil
		c.FilterChanged = true
	}
	if resp.PacketFilter != nil || resp.PacketFilters != nil {
		if m.updateFilters(resp.PacketFilter, resp.PacketFilters) {
			c.FilterChanged = true
		}
	}
	if resp.DNSConfig != nil {
		if !reflect.DeepEqual(resp.DNSConfig, m.dns) {
			c.DNSChanged = true
		}
		m.dns = resp.DNSConfig
	}
	if resp.Domain != "" && resp.Domain != m.domain {
		m.domain = resp.Domain
		c.DomainChanged = true
	}
	if first && len(m.profiles) > 0 {
		clear(m.profiles)
		c.UserProfilesChanged = true
	}
	for _, up := range resp.UserProfiles {
		if old, ok := m.profiles[up.ID]; !ok || old != up {
			m.profiles[up.ID] = up
			c.UserProfilesChanged = true
		}
	}

	r := recorder{c: &c}
	if d.hasFull {
		c.Full = true
		m.replacePeers(d.full, &r)
		return c, nil
	}
	if first {
		c.Full = true
		m.replacePeers(nil, &r)
	}
	m.applyPeerDeltas(resp, d.changed, &r)
	return c, nil
}

func selfFromNode(n *tailcfg.Node) Self {
	s := Self{
		ID:                n.ID,
		StableID:          n.StableID,
		Name:              n.Name,
		User:              n.User,
		Tags:              internTags(n.Tags),
		Key:               n.Key,
		KeyExpiry:         utc(n.KeyExpiry),
		Addresses:         clonePrefixes(n.Addresses),
		HomeDERP:          n.HomeRegion(),
		MachineAuthorized: n.MachineAuthorized,
		Expired:           n.Expired,
	}
	for _, r := range n.EffectiveAllowedIPs() {
		if !slices.Contains(n.Addresses, r) {
			s.Routes = append(s.Routes, r)
		}
	}
	if len(n.CapMap) > 0 {
		s.CapMapKeys = slices.Sorted(maps.Keys(n.CapMap))
	}
	return s
}

// recorder collects peer IDs into a Changes, listing an ID as changed at
// most once and not at all if it was added by the same message.
type recorder struct {
	c     *Changes
	seen  map[tailcfg.NodeID]struct{} // in PeersAdded or PeersChanged
	paths map[tailcfg.NodeID]struct{} // in PathsUpdated
}

func (r *recorder) added(p *Peer) {
	r.c.PeersAdded = append(r.c.PeersAdded, p.ID)
	r.c.PathsChanged = true
	r.seen = mark(r.seen, p.ID)
	r.pathsUpdated(p.ID)
}

func (r *recorder) removed(o *Peer) {
	r.c.PeersRemoved = append(r.c.PeersRemoved, o.ID)
	r.c.PathsChanged = true
	r.c.KeysGone = append(r.c.KeysGone, o.Key)
}

// changed records that peer o became p.
func (r *recorder) changed(o, p *Peer) {
	if !samePaths(o, p) {
		r.c.PathsChanged = true
		r.pathsUpdated(p.ID)
		if o.Key != p.Key {
			r.c.KeysGone = append(r.c.KeysGone, o.Key)
		}
	}
	if _, dup := r.seen[p.ID]; dup {
		return
	}
	r.c.PeersChanged = append(r.c.PeersChanged, p.ID)
	r.seen = mark(r.seen, p.ID)
}

func (r *recorder) pathsUpdated(id tailcfg.NodeID) {
	if _, dup := r.paths[id]; dup {
		return
	}
	r.c.PathsUpdated = append(r.c.PathsUpdated, id)
	r.paths = mark(r.paths, id)
}

func mark(set map[tailcfg.NodeID]struct{}, id tailcfg.NodeID) map[tailcfg.NodeID]struct{} {
	if set == nil {
		set = make(map[tailcfg.NodeID]struct{})
	}
	set[id] = struct{}{}
	return set
}

// replacePeers makes full the complete peer set. Peers equal to the current
// ones keep their entries; the rest are added, updated or removed.
func (m *Map) replacePeers(full []*Peer, r *recorder) {
	// Sort by ID and keep the last of duplicate IDs, as a map keyed by ID
	// filled in message order would.
	slices.SortStableFunc(full, func(a, b *Peer) int { return cmp.Compare(a.ID, b.ID) })
	full = dedupLast(full)

	old := &m.peers
	if len(old.byID) == 0 || len(full) < len(old.byID)/2 {
		// Build right-sized indexes rather than keep maps sized for a
		// bigger or empty tailnet.
		x := newPeerIndex(len(full))
		for _, p := range full {
			switch o := old.byID[p.ID]; {
			case o == nil:
				x.add(p)
				r.added(p)
			case equalPeer(o, p):
				x.add(o)
			default:
				x.add(p)
				r.changed(o, p)
			}
		}
		var gone []*Peer
		for id, o := range old.byID {
			if x.byID[id] == nil {
				gone = append(gone, o)
			}
		}
		slices.SortFunc(gone, func(a, b *Peer) int { return cmp.Compare(a.ID, b.ID) })
		for _, o := range gone {
			r.removed(o)
		}
		m.peers = x
		return
	}
	for _, p := range full {
		switch o := old.byID[p.ID]; {
		case o == nil:
			old.add(p)
			r.added(p)
		case !equalPeer(o, p):
			r.changed(o, p) // before update, which overwrites o
			old.update(o, p)
		}
	}
	var gone []*Peer
	for id, o := range old.byID {
		if _, ok := slices.BinarySearchFunc(full, id, func(p *Peer, id tailcfg.NodeID) int { return cmp.Compare(p.ID, id) }); !ok {
			gone = append(gone, o)
		}
	}
	slices.SortFunc(gone, func(a, b *Peer) int { return cmp.Compare(a.ID, b.ID) })
	for _, o := range gone {
		old.remove(o)
		r.removed(o)
	}
}

// dedupLast removes all but the last of each run of peers with equal IDs.
func dedupLast(s []*Peer) []*Peer {
	out := s[:0]
	for i, p := range s {
		if i+1 < len(s) && s[i+1].ID == p.ID {
			continue
		}
		out = append(out, p)
	}
	return out
}

func (m *Map) applyPeerDeltas(resp *tailcfg.MapResponse, changed []*Peer, r *recorder) {
	x := &m.peers
	for _, id := range resp.PeersRemoved {
		if o := x.byID[id]; o != nil {
			x.remove(o)
			r.removed(o)
		}
	}
	for _, p := range changed {
		switch o := x.byID[p.ID]; {
		case o == nil:
			x.add(p)
			r.added(p)
		case !equalPeer(o, p):
			r.changed(o, p) // before update, which overwrites o
			x.update(o, p)
		}
	}
	for id, seen := range resp.PeerSeenChange {
		m.patch(id, r, func(p *Peer) {
			if seen {
				p.LastSeen = m.now().UTC()
			} else {
				p.LastSeen = time.Time{}
			}
		})
	}
	for id, online := range resp.OnlineChange {
		m.patch(id, r, func(p *Peer) { p.Online = online })
	}
	for _, pc := range resp.PeersChangedPatch {
		if pc == nil {
			continue
		}
		m.patch(pc.NodeID, r, func(p *Peer) { applyPatch(p, pc) })
	}
}

// patch applies f to a copy of the peer with the given ID and stores the
// result if it differs. Unknown IDs are ignored.
func (m *Map) patch(id tailcfg.NodeID, r *recorder, f func(*Peer)) {
	o := m.peers.byID[id]
	if o == nil {
		return
	}
	np := *o
	f(&np)
	if !equalPeer(o, &np) {
		r.changed(o, &np) // before update, which overwrites o
		m.peers.update(o, &np)
	}
}

func applyPatch(p *Peer, pc *tailcfg.PeerChange) {
	if pc.DERPRegion != 0 {
		p.HomeDERP = pc.DERPRegion
	}
	if pc.Cap != 0 {
		p.Cap = pc.Cap
	}
	if pc.Endpoints != nil {
		p.Endpoints = nil
		if len(pc.Endpoints) > 0 {
			p.Endpoints = slices.Clone(pc.Endpoints)
		}
	}
	if pc.Key != nil {
		p.Key = *pc.Key
	}
	if pc.DiscoKey != nil {
		p.DiscoKey = *pc.DiscoKey
	}
	if pc.Online != nil {
		p.Online = *pc.Online
	}
	if pc.LastSeen != nil {
		p.LastSeen = utc(*pc.LastSeen)
	}
	if pc.KeyExpiry != nil {
		p.KeyExpiry = utc(*pc.KeyExpiry)
	}
}
