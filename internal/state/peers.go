package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"slices"
	"time"

	"github.com/microlink-go/microlink/internal/key"
	"github.com/microlink-go/microlink/internal/netmap"
	"github.com/microlink-go/microlink/internal/tailcfg"
)

const peersVersion = 1

// PeerCache is the last known netmap, reduced to what reaching peers needs.
type PeerCache struct {
	Saved time.Time
	// Self are the node's own tailnet addresses when the cache was saved.
	Self    []netip.Prefix `json:",omitempty"`
	Peers   []CachedPeer
	DERPMap *tailcfg.DERPMap `json:",omitempty"`
}

// CachedPeer is the stored form of one peer.
type CachedPeer struct {
	ID        tailcfg.NodeID
	Name      string `json:",omitempty"`
	Key       key.NodePublic
	DiscoKey  key.DiscoPublic `json:",omitzero"`
	KeyExpiry time.Time       `json:",omitzero"`
	Addresses []netip.Prefix
	// AllowedIPs is omitted when it equals Addresses.
	AllowedIPs []netip.Prefix   `json:",omitempty"`
	Endpoints  []netip.AddrPort `json:",omitempty"`
	HomeDERP   int              `json:",omitempty"`
}

// NewPeerCache builds a cache from netmap peers and a DERP map, leaving out
// peers that are expired at now.
func NewPeerCache(peers []netmap.Peer, dm *tailcfg.DERPMap, now time.Time) *PeerCache {
	c := &PeerCache{Saved: now.UTC(), DERPMap: dm, Peers: make([]CachedPeer, 0, len(peers))}
	for i := range peers {
		p := &peers[i]
		if p.ExpiredAt(now) {
			continue
		}
		cp := CachedPeer{
			ID: p.ID, Name: p.Name, Key: p.Key, DiscoKey: p.DiscoKey, KeyExpiry: p.KeyExpiry,
			Addresses: p.Addresses, Endpoints: p.Endpoints, HomeDERP: p.HomeDERP,
		}
		if p.HasOwnAllowedIPs() {
			cp.AllowedIPs = p.AllowedIPs
		}
		c.Peers = append(c.Peers, cp)
	}
	return c
}

// NetmapPeers returns the cached peers in netmap form, for Map.Restore.
func (c *PeerCache) NetmapPeers() []netmap.Peer {
	out := make([]netmap.Peer, 0, len(c.Peers))
	for _, cp := range c.Peers {
		p := netmap.Peer{
			ID: cp.ID, Name: cp.Name, Key: cp.Key, DiscoKey: cp.DiscoKey, KeyExpiry: cp.KeyExpiry,
			Addresses: cp.Addresses, AllowedIPs: cp.AllowedIPs, Endpoints: cp.Endpoints, HomeDERP: cp.HomeDERP,
		}
		if p.AllowedIPs == nil {
			p.AllowedIPs = p.Addresses
		}
		out = append(out, p)
	}
	return out
}

type peersFile struct {
	Version int
	PeerCache
}

// LoadPeers returns the peer cache, or nil if there is none or it cannot be
// used; a damaged cache is logged and otherwise ignored.
func (s *Store) LoadPeers() *PeerCache {
	p := s.path(PeersFile)
	data, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err == nil {
		var c *PeerCache
		if c, err = parsePeers(data); err == nil {
			return c
		}
	}
	s.logger.Warn("ignoring unusable peer cache", "path", p, "err", err)
	return nil
}

func parsePeers(data []byte) (*PeerCache, error) {
	var f peersFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, err
	}
	if f.Version != peersVersion {
		return nil, fmt.Errorf("unknown version %d", f.Version)
	}
	f.Peers = slices.DeleteFunc(f.Peers, func(cp CachedPeer) bool { return cp.Key.IsZero() })
	return &f.PeerCache, nil
}

// SavePeers writes the peer cache atomically, replacing any old one.
func (s *Store) SavePeers(c *PeerCache) error {
	data, err := json.Marshal(peersFile{Version: peersVersion, PeerCache: *c})
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	return writeFileAtomic(s.dir, PeersFile, data)
}
