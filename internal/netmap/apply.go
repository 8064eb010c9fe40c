package netmap

import (
	"cmp"
	"net/netip"
	"reflect"
	"slices"
	"time"

	"github.com/microlink-go/microlink/internal/tailcfg"
)

// Apply applies one message of the map stream, as Decoder.Decode returns
// it. The first non-keep-alive message after New or StartStream must carry
// the self node; otherwise Apply returns ErrNoSelfNode and changes nothing.
//
// A non-empty Peers list replaces all peers, and the other peer deltas of
// that message (PeersChanged, PeersRemoved, PeersChangedPatch,
// PeerSeenChange, OnlineChange) are then ignored. Otherwise removals are
// applied first, then upserts, seen and online changes, and patches.
//
// Apply takes ownership of the message's DERPMap, DNSConfig, filter rules
// and user profiles, and of its peers: a message is applied once.
func (m *Map) Apply(msg *Message) (Changes, error) {
	if msg == nil || msg.MapResponse == nil {
		return Changes{}, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	c, err := m.applyLocked(msg.MapResponse, &msg.peers)
	if err == nil {
		msg.peers = decoded{}
	}
	return c, err
}

// decoded holds the peers of a message, decoded straight into entries.
type decoded struct {
	full    []*entry // from Peers
	hasFull bool     // Peers was non-empty (even if all its entries were null)
	changed []*entry // from PeersChanged
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
		s.CapMapKeys = sortedKeys(n.CapMap)
	}
	return s
}

func clonePrefixes(s []netip.Prefix) []netip.Prefix {
	if len(s) == 0 {
		return nil
	}
	return slices.Clone(s)
}

// utc drops the location and monotonic reading of t, so a stored time never
// keeps a per-message time zone alive.
func utc(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC()
}

// recorder collects peer IDs into a Changes, listing an ID as changed at
// most once and not at all if it was added by the same message.
type recorder struct {
	c     *Changes
	seen  map[tailcfg.NodeID]struct{} // in PeersAdded or PeersChanged
	paths map[tailcfg.NodeID]struct{} // in PathsUpdated
	// distinct is set while each ID is recorded once at most, as when a
	// peer list is replaced: the sets above are not needed then, and for a
	// large netmap they would be megabytes of garbage.
	distinct bool
}

func (r *recorder) added(p *entry) {
	r.c.PeersAdded = append(r.c.PeersAdded, p.id)
	r.c.PathsChanged = true
	if !r.distinct {
		r.seen = mark(r.seen, p.id)
	}
	r.pathsUpdated(p.id)
}

func (r *recorder) removed(o *entry) {
	r.c.PeersRemoved = append(r.c.PeersRemoved, o.id)
	r.c.PathsChanged = true
	r.c.KeysGone = append(r.c.KeysGone, o.key)
}

// changed records that peer o became p.
func (r *recorder) changed(o, p *entry) {
	if !samePaths(o, p) {
		r.c.PathsChanged = true
		r.pathsUpdated(p.id)
		if o.key != p.key {
			r.c.KeysGone = append(r.c.KeysGone, o.key)
		}
	}
	if r.distinct {
		r.c.PeersChanged = append(r.c.PeersChanged, p.id)
		return
	}
	if _, dup := r.seen[p.id]; dup {
		return
	}
	r.c.PeersChanged = append(r.c.PeersChanged, p.id)
	r.seen = mark(r.seen, p.id)
}

func (r *recorder) pathsUpdated(id tailcfg.NodeID) {
	if r.distinct {
		r.c.PathsUpdated = append(r.c.PathsUpdated, id)
		return
	}
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
func (m *Map) replacePeers(full []*entry, r *recorder) {
	// Sort by ID and keep the last of duplicate IDs, as a map keyed by ID
	// filled in message order would.
	slices.SortStableFunc(full, func(a, b *entry) int { return cmp.Compare(a.id, b.id) })
	full = dedupLast(full)
	// Each ID is recorded once below: added or changed, or removed.
	r.distinct = true
	defer func() { r.distinct = false }()

	old := &m.peers
	if len(old.byID) == 0 && r.c.PeersAdded == nil {
		r.c.PeersAdded = make([]tailcfg.NodeID, 0, len(full))
		r.c.PathsUpdated = make([]tailcfg.NodeID, 0, len(full))
	}
	if len(old.byID) == 0 || len(full) < len(old.byID)/2 {
		// Build right-sized indexes rather than keep maps sized for a
		// bigger or empty tailnet.
		x := newPeerIndex(len(full))
		for _, p := range full {
			switch o := old.byID[p.id]; {
			case o == nil:
				x.add(p)
				r.added(p)
			case equalEntry(o, p):
				x.add(o)
			default:
				x.add(p)
				r.changed(o, p)
			}
		}
		var gone []*entry
		for id, o := range old.byID {
			if x.byID[id] == nil {
				gone = append(gone, o)
			}
		}
		sortByID(gone)
		for _, o := range gone {
			r.removed(o)
		}
		m.peers = x
		return
	}
	for _, p := range full {
		switch o := old.byID[p.id]; {
		case o == nil:
			old.add(p)
			r.added(p)
		case !equalEntry(o, p):
			r.changed(o, p) // before update, which overwrites o
			old.update(o, p)
		}
	}
	var gone []*entry
	for id, o := range old.byID {
		if _, ok := slices.BinarySearchFunc(full, id, func(p *entry, id tailcfg.NodeID) int { return cmp.Compare(p.id, id) }); !ok {
			gone = append(gone, o)
		}
	}
	sortByID(gone)
	for _, o := range gone {
		old.remove(o)
		r.removed(o)
	}
}

func sortByID(s []*entry) {
	slices.SortFunc(s, func(a, b *entry) int { return cmp.Compare(a.id, b.id) })
}

// dedupLast removes all but the last of each run of peers with equal IDs.
func dedupLast(s []*entry) []*entry {
	out := s[:0]
	for i, p := range s {
		if i+1 < len(s) && s[i+1].id == p.id {
			continue
		}
		out = append(out, p)
	}
	return out
}

func (m *Map) applyPeerDeltas(resp *tailcfg.MapResponse, changed []*entry, r *recorder) {
	x := &m.peers
	for _, id := range resp.PeersRemoved {
		if o := x.byID[id]; o != nil {
			x.remove(o)
			r.removed(o)
		}
	}
	for _, p := range changed {
		switch o := x.byID[p.id]; {
		case o == nil:
			x.add(p)
			r.added(p)
		case !equalEntry(o, p):
			r.changed(o, p) // before update, which overwrites o
			x.update(o, p)
		}
	}
	for id, seen := range resp.PeerSeenChange {
		m.patch(id, r, func(p *entry) {
			t := time.Time{}
			if seen {
				t = m.now()
			}
			p.lastSeenSec, p.lastSeenNsec = splitTime(t)
		})
	}
	for id, online := range resp.OnlineChange {
		m.patch(id, r, func(p *entry) { p.online = online })
	}
	for _, pc := range resp.PeersChangedPatch {
		if pc == nil {
			continue
		}
		m.patch(pc.NodeID, r, func(p *entry) { applyPatch(p, pc) })
	}
}

// patch applies f to a copy of the peer with the given ID and stores the
// result if it differs. Unknown IDs are ignored.
func (m *Map) patch(id tailcfg.NodeID, r *recorder, f func(*entry)) {
	o := m.peers.byID[id]
	if o == nil {
		return
	}
	np := *o
	f(&np)
	if !equalEntry(o, &np) {
		r.changed(o, &np) // before update, which overwrites o
		m.peers.update(o, &np)
	}
}

func applyPatch(p *entry, pc *tailcfg.PeerChange) {
	if pc.DERPRegion != 0 {
		p.homeDERP = pc.DERPRegion
	}
	if pc.Endpoints != nil {
		p.eps = packAddrPorts(nil, pc.Endpoints)
	}
	if pc.Key != nil {
		p.key = *pc.Key
	}
	if pc.DiscoKey != nil {
		p.disco = *pc.DiscoKey
	}
	if pc.Online != nil {
		p.online = *pc.Online
	}
	if pc.LastSeen != nil {
		p.lastSeenSec, p.lastSeenNsec = splitTime(*pc.LastSeen)
	}
	if pc.KeyExpiry != nil {
		p.keyExpirySec, p.keyExpiryNsec = splitTime(*pc.KeyExpiry)
	}
}
