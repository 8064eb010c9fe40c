package netmap

import (
	"errors"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/microlink-go/microlink/internal/key"
	"github.com/microlink-go/microlink/internal/tailcfg"
)

// ErrNoSelfNode is returned by Apply when the first message of a stream
// does not carry the self node.
var ErrNoSelfNode = errors.New("netmap: initial MapResponse lacks the self Node")

// Options configure a Map.
type Options struct {
	// Logger receives debug messages; nil discards them.
	Logger *slog.Logger
	// Now returns the local time; nil means time.Now. For tests.
	Now func() time.Time
}

// Map is the live netmap of one node. The zero value is not usable; call New.
type Map struct {
	logger *slog.Logger
	now    func() time.Time

	mu sync.RWMutex
	// wantFull is set until the first non-keep-alive message of a stream,
	// which must carry the self node and the complete peer list.
	wantFull bool
	skew     time.Duration // control time minus local time
	haveSelf bool
	self     Self
	peers    peerIndex
	derpMap  *tailcfg.DERPMap
	filters  map[string][]tailcfg.FilterRule
	filter   []tailcfg.FilterRule // concatenation of filters in key order
	dns      *tailcfg.DNSConfig
	domain   string
	profiles map[tailcfg.UserID]tailcfg.UserProfile
}

// New returns an empty Map expecting the first message of a stream.
func New(opts Options) *Map {
	m := &Map{
		logger:   opts.Logger,
		now:      opts.Now,
		wantFull: true,
		peers:    newPeerIndex(0),
		profiles: make(map[tailcfg.UserID]tailcfg.UserProfile),
	}
	if m.logger == nil {
		m.logger = slog.New(slog.DiscardHandler)
	}
	if m.now == nil {
		m.now = time.Now
	}
	return m
}

// Self is the self node as the netmap knows it.
type Self struct {
	ID        tailcfg.NodeID
	StableID  string
	Name      string // MagicDNS FQDN with a trailing dot
	User      tailcfg.UserID
	Tags      []string // ACL tags
	Key       key.NodePublic
	KeyExpiry time.Time // zero means never
	Addresses []netip.Prefix
	// Routes are the node's AllowedIPs beyond its own addresses: the
	// subnet and exit routes control approved for it to serve.
	Routes            []netip.Prefix
	HomeDERP          int
	MachineAuthorized bool
	Expired           bool
	// CapMapKeys are the names of the node attributes control granted.
	CapMapKeys []string
}

// Changes summarises what one message changed, so callers can react to
// what matters to them without diffing the netmap.
type Changes struct {
	// Full is set when the message replaced the whole peer list.
	Full bool
	// PeersAdded, PeersRemoved and PeersChanged list peer IDs in the order
	// the message named them. A peer replaced by an equal one is not listed.
	PeersAdded, PeersRemoved, PeersChanged []tailcfg.NodeID
	// PathsChanged is set when peers were added or removed, or a peer's
	// key, disco key, addresses, allowed IPs, endpoints, home region or
	// expiry changed: what the data plane needs to reach it. Changes of
	// online state, last-seen time or names alone leave it false.
	PathsChanged bool
	// PathsUpdated lists, once each, the peers present after the message
	// that were added or whose data-plane fields (those of PathsChanged)
	// changed. KeysGone lists the node keys that stopped naming a peer:
	// those of removed peers and the old keys of peers whose key changed.
	// With both, the data plane can be updated peer by peer.
	PathsUpdated []tailcfg.NodeID
	KeysGone     []key.NodePublic

	SelfChanged         bool
	DERPMapChanged      bool
	FilterChanged       bool
	DNSChanged          bool
	DomainChanged       bool
	UserProfilesChanged bool
}

// PeersTouched reports whether any peer was added, removed or changed.
func (c *Changes) PeersTouched() bool {
	return len(c.PeersAdded)+len(c.PeersRemoved)+len(c.PeersChanged) > 0
}

// Empty reports whether the message changed nothing.
func (c *Changes) Empty() bool {
	return !c.Full && !c.PeersTouched() && !c.SelfChanged && !c.DERPMapChanged &&
		!c.FilterChanged && !c.DNSChanged && !c.DomainChanged && !c.UserProfilesChanged
}

// StartStream tells the Map that a new map poll has begun: its first
// non-keep-alive message is a complete state, so its peer list replaces the
// current one even when empty, and named packet filters and user profiles
// start afresh. The DERP map and DNS configuration carry over until replaced.
func (m *Map) StartStream() {
	m.mu.Lock()
	m.wantFull = true
	m.mu.Unlock()
}

// Now returns the local time corrected by the clock skew estimated from the
// control server's ControlTime; use it to judge key expiry.
func (m *Map) Now() time.Time {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.now().Add(m.skew)
}

// ClockSkew returns the estimated control time minus local time.
func (m *Map) ClockSkew() time.Duration {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.skew
}

// IsExpired reports whether p is expired at control-adjusted now.
func (m *Map) IsExpired(p *Peer) bool { return p.ExpiredAt(m.Now()) }
