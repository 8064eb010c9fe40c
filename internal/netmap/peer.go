package netmap

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"time"
	"unique"

	"github.com/microlink-go/microlink/internal/key"
	"github.com/microlink-go/microlink/internal/tailcfg"
)

// Peer is a peer node as the Map's readers return it: what the data plane
// and status reporting need, without Hostinfo, CapMap or other control-only
// detail. The Map stores peers in a packed form and builds a Peer for each
// read; a Peer owns its slices.
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

// entry is a peer as the Map stores it, in 208 bytes plus its strings: a
// tailnet of 50,000 nodes keeps one per node. Times are kept as seconds and
// nanoseconds, address lists packed (see pack.go), and the peer's names in
// one string.
type entry struct {
	id   tailcfg.NodeID
	user tailcfg.UserID

	// Seconds and nanoseconds since the Unix epoch; zeroSec for the zero
	// time.
	keyExpirySec, lastSeenSec   int64
	keyExpiryNsec, lastSeenNsec int32

	// text is the MagicDNS name (nameLen bytes), then the stable ID
	// (stableLen bytes), then the hostname unless hostIsLabel says it is
	// the name's first label.
	text string

	os       unique.Handle[string]
	tags     unique.Handle[string] // packed tags, see packTags
	key      key.NodePublic
	disco    key.DiscoPublic
	addrs    string // packed Addresses
	allowed  string // packed AllowedIPs; the same as addrs when equal
	eps      string // packed Endpoints
	homeDERP int

	nameLen, stableLen uint16
	hostIsLabel        bool
	online             bool
	expired            bool
	wgOnly             bool
}

// zeroSec is the Unix time of the zero time.Time.
var zeroSec = time.Time{}.Unix()

func splitTime(t time.Time) (int64, int32) {
	if t.IsZero() {
		return zeroSec, 0
	}
	return t.Unix(), int32(t.Nanosecond())
}

func joinTime(sec int64, nsec int32) time.Time {
	if sec == zeroSec && nsec == 0 {
		return time.Time{}
	}
	return time.Unix(sec, int64(nsec)).UTC()
}

func (e *entry) name() string { return e.text[:e.nameLen] }

func (e *entry) stableID() string { return e.text[e.nameLen : e.nameLen+e.stableLen] }

func (e *entry) hostname() string {
	if e.hostIsLabel {
		return firstLabel(e.name())
	}
	return e.text[e.nameLen+e.stableLen:]
}

func (e *entry) osName() string {
	if e.os == (unique.Handle[string]{}) {
		return ""
	}
	return e.os.Value()
}

func (e *entry) keyExpiry() time.Time { return joinTime(e.keyExpirySec, e.keyExpiryNsec) }

// expiredAt is Peer.ExpiredAt.
func (e *entry) expiredAt(now time.Time) bool {
	if e.expired {
		return true
	}
	if e.keyExpirySec == zeroSec && e.keyExpiryNsec == 0 {
		return false
	}
	return e.keyExpiry().Before(now)
}

// ownAllowedIPs is Peer.HasOwnAllowedIPs.
func (e *entry) ownAllowedIPs() bool { return e.allowed != e.addrs }

// peer returns the entry as a Peer.
func (e *entry) peer() Peer {
	p := Peer{
		ID:              e.id,
		StableID:        e.stableID(),
		Name:            e.name(),
		Hostname:        e.hostname(),
		OS:              e.osName(),
		Tags:            unpackTags(e.tags),
		User:            e.user,
		Key:             e.key,
		DiscoKey:        e.disco,
		KeyExpiry:       e.keyExpiry(),
		LastSeen:        joinTime(e.lastSeenSec, e.lastSeenNsec),
		Addresses:       unpackPrefixes(e.addrs),
		Endpoints:       unpackAddrPorts(e.eps),
		HomeDERP:        e.homeDERP,
		Online:          e.online,
		Expired:         e.expired,
		IsWireGuardOnly: e.wgOnly,
	}
	p.AllowedIPs = p.Addresses
	if e.ownAllowedIPs() {
		p.AllowedIPs = unpackPrefixes(e.allowed)
	}
	return p
}

// newEntry stores p. scratch is reused for packing.
func newEntry(p *Peer, scratch []byte) *entry {
	e := &entry{
		id:       p.ID,
		user:     p.User,
		key:      p.Key,
		disco:    p.DiscoKey,
		homeDERP: p.HomeDERP,
		online:   p.Online,
		expired:  p.Expired,
		wgOnly:   p.IsWireGuardOnly,
	}
	if p.OS != "" {
		e.os = unique.Make(p.OS)
	}
	e.tags = packTags(scratch, p.Tags)
	e.setText(p.Name, p.StableID, p.Hostname)
	e.keyExpirySec, e.keyExpiryNsec = splitTime(p.KeyExpiry)
	e.lastSeenSec, e.lastSeenNsec = splitTime(p.LastSeen)
	e.addrs = packPrefixes(scratch, p.Addresses)
	e.allowed = e.addrs
	if p.HasOwnAllowedIPs() {
		if a := packPrefixes(scratch, p.AllowedIPs); a != e.addrs {
			e.allowed = a
		}
	}
	e.eps = packAddrPorts(scratch, p.Endpoints)
	return e
}

// setText stores the names, in one allocation. Names longer than 64 KiB
// are cut short: no DNS name or stable ID is that long.
func (e *entry) setText(name, stableID, hostname string) {
	name = name[:min(len(name), 0xffff)]
	stableID = stableID[:min(len(stableID), 0xffff)]
	e.nameLen, e.stableLen = uint16(len(name)), uint16(len(stableID))
	e.hostIsLabel = hostname != "" && hostname == firstLabel(name)
	if e.hostIsLabel {
		hostname = ""
	}
	e.text = name + stableID + hostname
}

// samePaths reports whether a and b agree on everything the data plane
// uses to reach the peer.
func samePaths(a, b *entry) bool {
	return a.key == b.key && a.disco == b.disco &&
		a.keyExpirySec == b.keyExpirySec && a.keyExpiryNsec == b.keyExpiryNsec &&
		a.expired == b.expired && a.homeDERP == b.homeDERP && a.wgOnly == b.wgOnly &&
		a.addrs == b.addrs && a.allowed == b.allowed && a.eps == b.eps
}

// equalEntry reports whether two entries carry the same information.
func equalEntry(a, b *entry) bool {
	return samePaths(a, b) && a.id == b.id && a.user == b.user &&
		a.text == b.text && a.nameLen == b.nameLen && a.stableLen == b.stableLen &&
		a.hostIsLabel == b.hostIsLabel && a.os == b.os && a.tags == b.tags &&
		a.lastSeenSec == b.lastSeenSec && a.lastSeenNsec == b.lastSeenNsec &&
		a.online == b.online
}

// packTags returns the handle of a peer's tags packed into one string
// (each a uvarint length and its bytes), so that the many peers with the
// same tags share one copy, or the zero handle for no tags.
func packTags(scratch []byte, tags []string) unique.Handle[string] {
	if len(tags) == 0 {
		return unique.Handle[string]{}
	}
	b := scratch[:0]
	for _, t := range tags {
		b = binary.AppendUvarint(b, uint64(len(t)))
		b = append(b, t...)
	}
	return unique.Make(string(b))
}

// unpackTags returns the tags of a handle packTags made, each interned.
func unpackTags(h unique.Handle[string]) []string {
	if h == (unique.Handle[string]{}) {
		return nil
	}
	s := h.Value()
	var out []string
	for s != "" {
		n, w := binary.Uvarint([]byte(s[:min(len(s), binary.MaxVarintLen64)]))
		out = append(out, intern(s[w:w+int(n)]))
		s = s[w+int(n):]
	}
	return out
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

// intern returns a canonical copy of s, for strings many peers repeat.
func intern(s string) string {
	if s == "" {
		return ""
	}
	return unique.Make(s).Value()
}
