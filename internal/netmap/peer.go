package netmap

import (
	"net/netip"
	"slices"
	"strings"
	"time"
	"unique"

	"github.com/microlink-go/microlink/internal/key"
	"github.com/microlink-go/microlink/internal/tailcfg"
)

// Peer is the compact form of a peer node: what the data plane and status
// reporting need, without Hostinfo, CapMap or other control-only detail.
type Peer struct {
	ID       tailcfg.NodeID
	StableID string
	Name     string // MagicDNS FQDN with a trailing dot
	Hostname string // Hostinfo.Hostname
	OS       string // Hostinfo.OS
	User     tailcfg.UserID
	Key      key.NodePublic
	DiscoKey key.DiscoPublic
	// Tags are the peer's ACL tags ("tag:server"); the strings are
	// interned, as many peers carry the same few tags.
	Tags []string

	// KeyExpiry is when the peer's node key expires; zero means never.
	KeyExpiry time.Time
	// LastSeen is when control last saw the peer online; zero if unknown.
	LastSeen time.Time

	// Addresses are the peer's own tailnet addresses.
	Addresses []netip.Prefix
	// AllowedIPs are the peer's WireGuard allowed IPs. When they equal
	// Addresses (the usual case) both fields share one backing array.
	AllowedIPs []netip.Prefix
	// Endpoints are the peer's UDP candidates for direct paths.
	Endpoints []netip.AddrPort

	HomeDERP int // home DERP region, 0 if unknown
	Cap      int // the peer's capability version

	Online          bool
	Expired         bool // control marked the peer expired
	IsWireGuardOnly bool
}

// ExpiredAt reports whether the peer must not be talked to at time now
// (which should be control-adjusted, see Map.Now): control marked it
// expired, or its node key expired before now.
func (p *Peer) ExpiredAt(now time.Time) bool {
	return p.Expired || (!p.KeyExpiry.IsZero() && p.KeyExpiry.Before(now))
}

// ShortName returns the first label of the peer's MagicDNS name, or its
// hostname if it has no name.
func (p *Peer) ShortName() string {
	if p.Name == "" {
		return p.Hostname
	}
	return firstLabel(p.Name)
}

// HasOwnAllowedIPs reports whether the peer's AllowedIPs differ from its
// Addresses, as for subnet routers and exit nodes.
func (p *Peer) HasOwnAllowedIPs() bool { return !sameBacking(p.AllowedIPs, p.Addresses) }

func firstLabel(name string) string {
	if i := strings.IndexByte(name, '.'); i >= 0 {
		return name[:i]
	}
	return name
}

// sameBacking reports whether a and b are the same slice (same array, same
// length), which is how Peer marks AllowedIPs that equal Addresses.
func sameBacking(a, b []netip.Prefix) bool {
	if len(a) != len(b) {
		return false
	}
	return len(a) == 0 || &a[0] == &b[0]
}

// intern returns a canonical copy of s, for strings many peers repeat.
func intern(s string) string {
	if s == "" {
		return ""
	}
	return unique.Make(s).Value()
}

// compactPeer converts a wire node to a Peer. It copies every slice it keeps
// to an exactly sized one, so n and its decode buffers may be dropped.
func compactPeer(n *tailcfg.Node) *Peer {
	p := &Peer{
		ID:              n.ID,
		StableID:        n.StableID,
		Name:            n.Name,
		User:            n.User,
		Key:             n.Key,
		DiscoKey:        n.DiscoKey,
		KeyExpiry:       utc(n.KeyExpiry),
		HomeDERP:        n.HomeRegion(),
		Cap:             n.Cap,
		Expired:         n.Expired,
		IsWireGuardOnly: n.IsWireGuardOnly,
	}
	p.Tags = internTags(n.Tags)
	if n.LastSeen != nil {
		p.LastSeen = utc(*n.LastSeen)
	}
	if n.Online != nil {
		p.Online = *n.Online
	}
	if hi := n.Hostinfo; hi != nil {
		p.OS = intern(hi.OS)
		p.Hostname = hi.Hostname
		// Most hostnames equal the first label of the MagicDNS name; share
		// the name's bytes then instead of keeping a second string.
		if l := firstLabel(p.Name); l == p.Hostname {
			p.Hostname = l
		}
	}
	p.Addresses = clonePrefixes(n.Addresses)
	allowed := n.EffectiveAllowedIPs()
	if slices.Equal(allowed, n.Addresses) {
		p.AllowedIPs = p.Addresses
	} else {
		p.AllowedIPs = clonePrefixes(allowed)
	}
	if len(n.Endpoints) > 0 {
		p.Endpoints = slices.Clone(n.Endpoints)
	}
	return p
}

// internTags returns tags in an exactly sized slice of interned strings,
// or nil.
func internTags(tags []string) []string {
	if len(tags) == 0 {
		return nil
	}
	out := make([]string, len(tags))
	for i, t := range tags {
		out[i] = intern(t)
	}
	return out
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

// equalPeer reports whether two peers carry the same information.
// samePaths reports whether a and b agree on everything the data plane uses
// to reach the peer.
func samePaths(a, b *Peer) bool {
	return a.Key == b.Key && a.DiscoKey == b.DiscoKey &&
		a.KeyExpiry.Equal(b.KeyExpiry) && a.Expired == b.Expired &&
		a.HomeDERP == b.HomeDERP && a.IsWireGuardOnly == b.IsWireGuardOnly &&
		slices.Equal(a.Addresses, b.Addresses) &&
		slices.Equal(a.AllowedIPs, b.AllowedIPs) &&
		slices.Equal(a.Endpoints, b.Endpoints)
}

func equalPeer(a, b *Peer) bool {
	return a.ID == b.ID && a.StableID == b.StableID && a.Name == b.Name &&
		a.Hostname == b.Hostname && a.OS == b.OS && a.User == b.User &&
		slices.Equal(a.Tags, b.Tags) && a.Key == b.Key && a.DiscoKey == b.DiscoKey &&
		a.KeyExpiry.Equal(b.KeyExpiry) && a.LastSeen.Equal(b.LastSeen) &&
		slices.Equal(a.Addresses, b.Addresses) &&
		slices.Equal(a.AllowedIPs, b.AllowedIPs) &&
		slices.Equal(a.Endpoints, b.Endpoints) &&
		a.HomeDERP == b.HomeDERP && a.Cap == b.Cap && a.Online == b.Online &&
		a.Expired == b.Expired && a.IsWireGuardOnly == b.IsWireGuardOnly
}
