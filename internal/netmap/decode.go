package netmap

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"time"
	"unicode/utf8"
	"unique"

	"github.com/microlink-go/microlink/internal/key"
	"github.com/microlink-go/microlink/internal/tailcfg"
)

// Message is one message of the map stream decoded for Map.Apply: the
// MapResponse without its peer lists (Peers and PeersChanged are always
// nil), whose nodes are already in the Map's compact form.
type Message struct {
	*tailcfg.MapResponse
	peers decoded
}

// Decoder decodes the messages of a map stream. It reads a message's JSON
// as a stream and turns each node of Peers and PeersChanged into the Map's
// compact form as it goes, so that the netmap of a large tailnet never
// exists in memory as JSON text or as wire structures: beyond the peers it
// keeps, a message costs its other members (DERP map, packet filter and the
// like, decoded with encoding/json) and a fixed read buffer.
//
// Decode accepts what encoding/json accepts, with the same result, except
// that fields of a node the compact form does not use are only checked to
// be well-formed JSON, not to have their declared type, and that a member
// repeated in one object is taken from its last occurrence alone. A
// Decoder reuses its buffers from one message to the next; it is not safe
// for concurrent use. The zero value is ready to use.
type Decoder struct {
	j       jsonReader
	rest    []byte                         // the values of the members other than the peer lists
	members [len(responseMembers)]restSpan // where in rest each of them is

	node wireNode
	text []byte // scratch for an entry's names
	os   map[string]unique.Handle[string]
}

// keepRest bounds the buffer kept for the members other than peers.
const keepRest = 256 << 10

// Decode reads one JSON MapResponse from r, up to the end of r.
func (d *Decoder) Decode(r io.Reader) (*Message, error) {
	msg, err := d.decode(r)
	d.j.release()
	if cap(d.rest) > keepRest {
		d.rest = nil
	}
	if err != nil {
		return nil, fmt.Errorf("netmap: decoding map message: %w", err)
	}
	return msg, nil
}

var (
	namePeers        = []byte("Peers")
	namePeersChanged = []byte("PeersChanged")
)

// restSpan is where a member's value is in Decoder.rest.
type restSpan struct {
	start, end int
	set        bool
}

// responseMembers are the names of the members of a MapResponse other
// than the peer lists; responseField gives the field each decodes into.
// Each member is decoded on its own with encoding/json, not the
// MapResponse as a whole: encoding/json builds, and keeps for the life of
// the process, field tables for every type reachable from a struct it
// decodes, used or not, and MapResponse reaches nearly all of tailcfg's.
// A member repeated in the object is taken from its last occurrence.
var responseMembers = [...]string{
	"KeepAlive",
	"PingRequest",
	"PopBrowserURL",
	"Node",
	"DERPMap",
	"PeersRemoved",
	"PeersChangedPatch",
	"PeerSeenChange",
	"OnlineChange",
	"DNSConfig",
	"Domain",
	"PacketFilter",
	"PacketFilters",
	"UserProfiles",
	"Health",
	"DisplayMessages",
	"ControlTime",
	"Debug",
}

// responseField returns the field of m that responseMembers[i] decodes
// into.
func responseField(m *tailcfg.MapResponse, i int) any {
	switch i {
	case 0:
		return &m.KeepAlive
	case 1:
		return &m.PingRequest
	case 2:
		return &m.PopBrowserURL
	case 3:
		return &m.Node
	case 4:
		return &m.DERPMap
	case 5:
		return &m.PeersRemoved
	case 6:
		return &m.PeersChangedPatch
	case 7:
		return &m.PeerSeenChange
	case 8:
		return &m.OnlineChange
	case 9:
		return &m.DNSConfig
	case 10:
		return &m.Domain
	case 11:
		return &m.PacketFilter
	case 12:
		return &m.PacketFilters
	case 13:
		return &m.UserProfiles
	case 14:
		return &m.Health
	case 15:
		return &m.DisplayMessages
	case 16:
		return &m.ControlTime
	case 17:
		return &m.Debug
	}
	panic("netmap: no MapResponse member " + strconv.Itoa(i))
}

// responseMember returns the index in responseMembers of the member
// named name, matched as encoding/json matches names (ignoring case), or
// -1.
func responseMember(name []byte) int {
	for i, m := range responseMembers {
		if bytes.EqualFold(name, []byte(m)) {
			return i
		}
	}
	return -1
}

func (d *Decoder) decode(r io.Reader) (*Message, error) {
	j := &d.j
	j.reset(r)
	msg := &Message{MapResponse: new(tailcfg.MapResponse)}
	if null, err := j.isNull(); err != nil || null {
		if err == nil {
			err = j.finish()
		}
		return msg, err
	}
	if c, ok := j.peek(); ok && c != '{' {
		return nil, fmt.Errorf("the message is a JSON %s, not an object", j.kind())
	}
	if err := j.expect('{', "where the message belongs"); err != nil {
		return nil, err
	}
	d.rest = d.rest[:0]
	d.members = [len(responseMembers)]restSpan{}
	for first := true; ; {
		more, err := j.next(&first, '}')
		if err != nil {
			return nil, err
		}
		if !more {
			break
		}
		name, err := j.readKey()
		if err != nil {
			return nil, err
		}
		switch i := responseMember(name); {
		case bytes.EqualFold(name, namePeers):
			msg.peers.full, msg.peers.hasFull, err = d.decodeNodes("Peers")
		case bytes.EqualFold(name, namePeersChanged):
			msg.peers.changed, _, err = d.decodeNodes("PeersChanged")
		case i >= 0:
			start := len(d.rest)
			j.startCapture(&d.rest)
			err = j.skip(1)
			j.stopCapture()
			d.members[i] = restSpan{start, len(d.rest), true}
		default:
			err = j.skip(1)
		}
		if err != nil {
			return nil, err
		}
	}
	if err := j.finish(); err != nil {
		return nil, err
	}
	for i, m := range d.members {
		if !m.set {
			continue
		}
		if err := json.Unmarshal(d.rest[m.start:m.end], responseField(msg.MapResponse, i)); err != nil {
			return nil, err
		}
	}
	return msg, nil
}

// decodeNodes reads an array of nodes, or null. nonEmpty reports whether
// the array had elements, null ones included.
func (d *Decoder) decodeNodes(field string) (out []*entry, nonEmpty bool, err error) {
	j := &d.j
	if null, err := j.isNull(); err != nil || null {
		return nil, false, err
	}
	if c, ok := j.peek(); ok && c != '[' {
		return nil, false, fmt.Errorf("%s is a JSON %s, not an array", field, j.kind())
	}
	if err := j.expect('[', ""); err != nil {
		return nil, false, err
	}
	for first := true; ; {
		more, err := j.next(&first, ']')
		if err != nil {
			return nil, false, err
		}
		if !more {
			return out, nonEmpty, nil
		}
		nonEmpty = true
		if null, err := j.isNull(); err != nil {
			return nil, false, err
		} else if null {
			continue
		}
		e, err := d.decodeNode()
		if err != nil {
			return nil, false, fmt.Errorf("%s[%d]: %w", field, len(out), err)
		}
		out = append(out, e)
	}
}

// wireNode holds the fields of one node that the compact form uses, as
// read so far. Strings are kept in buf until the entry is built.
type wireNode struct {
	id, user            int64
	key                 key.NodePublic
	disco               key.DiscoPublic
	keyExpiry, lastSeen time.Time
	name, stableID      span
	derp                span // the legacy "DERP" string
	hostname, os        span
	tags                []byte // packed as packTags does; nil for none
	homeDERP            int64
	online              bool
	expired, wgOnly     bool
	apiOnly             bool // UnsignedPeerAPIOnly
	allowedSet          bool // AllowedIPs was a list, not null or absent

	buf                 []byte
	addrs, allowed, eps []byte // packed
	addrBuf, allowedBuf []byte // backing arrays of addrs and allowed
	epsBuf, tagsBuf     []byte
}

// span is a string held in wireNode.buf.
type span struct{ off, len int }

func (n *wireNode) str(s span) []byte { return n.buf[s.off : s.off+s.len] }

func (n *wireNode) reset() {
	buf, ab, lb, eb, tb := n.buf[:0], n.addrBuf[:0], n.allowedBuf[:0], n.epsBuf[:0], n.tagsBuf[:0]
	*n = wireNode{buf: buf, addrBuf: ab, allowedBuf: lb, epsBuf: eb, tagsBuf: tb}
}

func (n *wireNode) keep(b []byte) span {
	s := span{len(n.buf), len(b)}
	n.buf = append(n.buf, b...)
	return s
}

// decodeNode reads one node object into an entry.
func (d *Decoder) decodeNode() (*entry, error) {
	j := &d.j
	n := &d.node
	n.reset()
	if c, ok := j.peek(); ok && c != '{' {
		return nil, fmt.Errorf("node is a JSON %s, not an object", j.kind())
	}
	if err := j.expect('{', ""); err != nil {
		return nil, err
	}
	for first := true; ; {
		more, err := j.next(&first, '}')
		if err != nil {
			return nil, err
		}
		if !more {
			break
		}
		k, err := j.readKey()
		if err != nil {
			return nil, err
		}
		var name [24]byte
		f := fold(name[:0], k)
		if err := d.nodeField(f); err != nil {
			return nil, fmt.Errorf("%s: %w", string(f), err)
		}
	}
	return d.entry(), nil
}

// fold returns k in lower case if it is ASCII, or k mapped to the node
// field it matches the way encoding/json matches names (ignoring case,
// Unicode's simple folding included). Unmatched non-ASCII names fold to
// themselves, which matches no field.
func fold(dst, k []byte) []byte {
	if len(k) > cap(dst) {
		return k // longer than any field name
	}
	for _, c := range k {
		if c >= utf8.RuneSelf {
			for _, f := range nodeFields {
				if bytes.EqualFold(k, []byte(f)) {
					return append(dst, f...)
				}
			}
			return k
		}
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

// nodeFields are the node fields the compact form uses, and those of
// Hostinfo, in lower case.
var nodeFields = []string{
	"id", "stableid", "name", "user", "key", "keyexpiry", "discokey",
	"addresses", "allowedips", "endpoints", "derp", "homederp", "hostinfo",
	"lastseen", "online", "expired", "iswireguardonly", "unsignedpeerapionly",
	"tags", "hostname", "os",
}

func (d *Decoder) nodeField(f []byte) error {
	j, n := &d.j, &d.node
	switch string(f) {
	case "id":
		return d.readInt(&n.id, false)
	case "user":
		return d.readInt(&n.user, false)
	case "homederp":
		return d.readInt(&n.homeDERP, true)
	case "stableid":
		return d.readString(&n.stableID)
	case "name":
		return d.readString(&n.name)
	case "derp":
		return d.readString(&n.derp)
	case "key":
		return d.readKey(&n.key)
	case "discokey":
		return d.readKey(&n.disco)
	case "keyexpiry":
		_, err := d.readTime(&n.keyExpiry)
		return err
	case "lastseen":
		null, err := d.readTime(&n.lastSeen)
		if null {
			n.lastSeen = time.Time{}
		}
		return err
	case "online":
		null, err := d.readBool(&n.online)
		if null {
			n.online = false
		}
		return err
	case "expired":
		_, err := d.readBool(&n.expired)
		return err
	case "iswireguardonly":
		_, err := d.readBool(&n.wgOnly)
		return err
	case "unsignedpeerapionly":
		_, err := d.readBool(&n.apiOnly)
		return err
	case "addresses":
		_, err := d.readList(&n.addrs, &n.addrBuf, parsePrefix)
		return err
	case "allowedips":
		set, err := d.readList(&n.allowed, &n.allowedBuf, parsePrefix)
		n.allowedSet = set
		return err
	case "endpoints":
		_, err := d.readList(&n.eps, &n.epsBuf, parseAddrPort)
		return err
	case "hostinfo":
		return d.readHostinfo()
	case "tags":
		return d.readTags()
	}
	return j.skip(3)
}

func (d *Decoder) typeError(want string) error {
	return fmt.Errorf("cannot decode a JSON %s into a %s", d.j.kind(), want)
}

// readInt reads an integer into dst, which stands for an int64 field or, if
// isInt, an int field.
func (d *Decoder) readInt(dst *int64, isInt bool) error {
	j := &d.j
	if null, err := j.isNull(); err != nil || null {
		return err
	}
	if c, _ := j.peek(); c != '-' && (c < '0' || c > '9') {
		return d.typeError("number")
	}
	b, err := j.readNumber()
	if err != nil {
		return err
	}
	v, ok := parseInt(b)
	if !ok || (isInt && int64(int(v)) != v) {
		return fmt.Errorf("number %s is not an integer in range", b)
	}
	*dst = v
	return nil
}

// parseInt parses the text of a JSON number as an int64, as strconv.ParseInt
// does; it fails for fractions, exponents and overflows.
func parseInt(b []byte) (int64, bool) {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) == 0 {
		return 0, false
	}
	var u uint64
	for _, c := range b {
		if c < '0' || c > '9' || u > (1<<63)/10 {
			return 0, false
		}
		u = u*10 + uint64(c-'0')
	}
	switch {
	case neg && u <= 1<<63:
		return -int64(u), true
	case !neg && u < 1<<63:
		return int64(u), true
	}
	return 0, false
}

func (d *Decoder) readString(dst *span) error {
	j := &d.j
	if null, err := j.isNull(); err != nil || null {
		return err
	}
	if c, _ := j.peek(); c != '"' {
		return d.typeError("string")
	}
	s, _, err := j.readString()
	if err == nil {
		*dst = d.node.keep(s)
	}
	return err
}

func (d *Decoder) readKey(dst interface{ UnmarshalText([]byte) error }) error {
	j := &d.j
	if null, err := j.isNull(); err != nil || null {
		return err
	}
	if c, _ := j.peek(); c != '"' {
		return d.typeError("key")
	}
	s, _, err := j.readString()
	if err != nil {
		return err
	}
	return dst.UnmarshalText(s)
}

// readTime reads an RFC 3339 time into dst, as time.Time's UnmarshalJSON
// does, and reports whether the value was null (which leaves dst alone).
func (d *Decoder) readTime(dst *time.Time) (null bool, err error) {
	j := &d.j
	if null, err := j.isNull(); err != nil || null {
		return null, err
	}
	if c, _ := j.peek(); c != '"' {
		return false, errors.New("time is not a JSON string")
	}
	s, escaped, err := j.readString()
	if err != nil {
		return false, err
	}
	if escaped {
		return false, errors.New("time has escapes")
	}
	var t time.Time
	if err := t.UnmarshalText(s); err != nil {
		return false, err
	}
	*dst = t
	return false, nil
}

// readBool reads a boolean into dst and reports whether the value was null
// (which leaves dst alone).
func (d *Decoder) readBool(dst *bool) (null bool, err error) {
	j := &d.j
	if null, err := j.isNull(); err != nil || null {
		return null, err
	}
	if c, _ := j.peek(); c != 't' && c != 'f' {
		return false, d.typeError("bool")
	}
	*dst, err = j.readBool()
	return false, err
}

// readTags reads a list of strings (null elements are empty strings, as
// encoding/json makes them) packed as packTags does.
func (d *Decoder) readTags() error {
	j, n := &d.j, &d.node
	if null, err := j.isNull(); err != nil || null {
		n.tags = nil
		return err
	}
	if c, _ := j.peek(); c != '[' {
		return d.typeError("list")
	}
	j.pos++
	b := n.tagsBuf[:0]
	for first := true; ; {
		more, err := j.next(&first, ']')
		if err != nil {
			return err
		}
		if !more {
			break
		}
		var t []byte
		if null, err := j.isNull(); err != nil {
			return err
		} else if !null {
			if c, _ := j.peek(); c != '"' {
				return d.typeError("string")
			}
			if t, _, err = j.readString(); err != nil {
				return err
			}
		}
		b = binary.AppendUvarint(b, uint64(len(t)))
		b = append(b, t...)
	}
	// An empty list is no tags, like the nil a Peer gets for it.
	n.tagsBuf, n.tags = b, b
	if len(b) == 0 {
		n.tags = nil
	}
	return nil
}

// readList reads a list of addresses with parse and packs it into *dst,
// backed by *buf. It reports whether the value was a list (not null).
func (d *Decoder) readList(dst, buf *[]byte, parse func([]byte, []byte) ([]byte, error)) (bool, error) {
	j := &d.j
	if null, err := j.isNull(); err != nil || null {
		*dst = nil
		return false, err
	}
	if c, _ := j.peek(); c != '[' {
		return false, d.typeError("list")
	}
	j.pos++
	b := (*buf)[:0]
	for first := true; ; {
		more, err := j.next(&first, ']')
		if err != nil {
			return false, err
		}
		if !more {
			break
		}
		if null, err := j.isNull(); err != nil {
			return false, err
		} else if null {
			b = append(b, tagZero)
			continue
		}
		if c, _ := j.peek(); c != '"' {
			return false, d.typeError("address")
		}
		s, _, err := j.readString()
		if err != nil {
			return false, err
		}
		if b, err = parse(b, s); err != nil {
			return false, err
		}
	}
	*buf, *dst = b, b
	return true, nil
}

// parsePrefix appends the prefix s to b, packed. It reads the usual IPv4
// prefix itself and leaves the rest to netip.ParsePrefix, whose rules it
// follows (an empty string is the zero Prefix).
func parsePrefix(b, s []byte) ([]byte, error) {
	if len(s) == 0 {
		return append(b, tagZero), nil
	}
	if a, rest, ok := parseAddr(s); ok && len(rest) >= 2 && rest[0] == '/' {
		if bits, ok := smallUint(rest[1:], 3); ok && int(bits) <= a.BitLen() && (rest[1] != '0' || len(rest) == 2) {
			return append(appendAddr(b, a), byte(bits)), nil
		}
	}
	p, err := netip.ParsePrefix(string(s))
	if err != nil {
		return b, err
	}
	return appendPrefix(b, p), nil
}

// parseAddrPort is parsePrefix for an AddrPort.
func parseAddrPort(b, s []byte) ([]byte, error) {
	if len(s) == 0 {
		return append(b, tagZero), nil
	}
	var a netip.Addr
	var rest []byte
	if a4, r, ok := parse4(s); ok {
		a, rest = netip.AddrFrom4(a4), r
	} else if s[0] == '[' {
		if a16, r, ok := parse6(s[1:]); ok && len(r) > 0 && r[0] == ']' {
			a, rest = netip.AddrFrom16(a16), r[1:]
		}
	}
	if a.IsValid() && len(rest) >= 2 && rest[0] == ':' {
		if port, ok := smallUint(rest[1:], 5); ok && port <= 0xffff {
			return appendAddrPort(b, netip.AddrPortFrom(a, uint16(port))), nil
		}
	}
	ap, err := netip.ParseAddrPort(string(s))
	if err != nil {
		return b, err
	}
	return appendAddrPort(b, ap), nil
}

// parseAddr reads an IPv4 or IPv6 address at the start of s, in the forms
// parse4 and parse6 read.
func parseAddr(s []byte) (netip.Addr, []byte, bool) {
	if a4, rest, ok := parse4(s); ok {
		return netip.AddrFrom4(a4), rest, true
	}
	if a16, rest, ok := parse6(s); ok {
		return netip.AddrFrom16(a16), rest, true
	}
	return netip.Addr{}, nil, false
}

// parse6 reads an IPv6 address at the start of s in its usual forms: up to
// eight groups of one to four hex digits, with at most one "::" standing
// for at least one group of zeros. It leaves embedded IPv4 addresses and
// zones to netip, declining any text it is not sure netip reads alike.
func parse6(s []byte) (a [16]byte, rest []byte, ok bool) {
	var groups [8]uint16
	n, gap, i := 0, -1, 0 // groups read, where "::" was (in groups), position
	if len(s) >= 2 && s[0] == ':' && s[1] == ':' {
		gap, i = 0, 2
	}
	for n < 8 {
		var v uint16
		d := 0
		for ; d < 4 && i+d < len(s); d++ {
			h, ok := unhex(s[i+d])
			if !ok {
				break
			}
			v = v<<4 | uint16(h)
		}
		if d == 0 {
			if gap == n {
				break // the address may end right after "::"
			}
			return a, nil, false
		}
		if i+d < len(s) && isHex(s[i+d]) {
			return a, nil, false // more than four digits
		}
		groups[n] = v
		n++
		i += d
		if i+1 < len(s) && s[i] == ':' && s[i+1] == ':' {
			if gap >= 0 {
				return a, nil, false
			}
			gap, i = n, i+2
			continue
		}
		if i < len(s) && s[i] == ':' && n < 8 {
			i++
			continue
		}
		break
	}
	if i < len(s) && (s[i] == '.' || s[i] == '%' || s[i] == ':' || isHex(s[i])) {
		return a, nil, false
	}
	if (gap < 0 && n != 8) || (gap >= 0 && n > 7) {
		return a, nil, false
	}
	out := groups
	if gap >= 0 {
		out = [8]uint16{}
		copy(out[:], groups[:gap])
		copy(out[8-(n-gap):], groups[gap:n])
	}
	for j, g := range out {
		a[2*j], a[2*j+1] = byte(g>>8), byte(g)
	}
	return a, s[i:], true
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func isHex(c byte) bool { _, ok := unhex(c); return ok }

// parse4 reads a dotted-quad IPv4 address in the only form netip.ParseAddr
// accepts (decimal, no leading zeros) at the start of s.
func parse4(s []byte) (a [4]byte, rest []byte, ok bool) {
	for i := range 4 {
		if i > 0 {
			if len(s) == 0 || s[0] != '.' {
				return a, nil, false
			}
			s = s[1:]
		}
		n := 0
		for n < len(s) && n < 3 && '0' <= s[n] && s[n] <= '9' {
			n++
		}
		v, ok := smallUint(s[:n], 3)
		if !ok || v > 255 || (n > 1 && s[0] == '0') || (n < len(s) && '0' <= s[n] && s[n] <= '9') {
			return a, nil, false
		}
		a[i], s = byte(v), s[n:]
	}
	return a, s, true
}

// smallUint parses 1 to max decimal digits making up all of s.
func smallUint(s []byte, max int) (uint32, bool) {
	if len(s) == 0 || len(s) > max {
		return 0, false
	}
	var v uint32
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + uint32(c-'0')
	}
	return v, true
}

func (d *Decoder) readHostinfo() error {
	j, n := &d.j, &d.node
	if null, err := j.isNull(); err != nil || null {
		n.hostname, n.os = span{}, span{}
		return err
	}
	if c, _ := j.peek(); c != '{' {
		return d.typeError("Hostinfo")
	}
	j.pos++
	for first := true; ; {
		more, err := j.next(&first, '}')
		if err != nil || !more {
			return err
		}
		k, err := j.readKey()
		if err != nil {
			return err
		}
		var name [24]byte
		switch f := fold(name[:0], k); string(f) {
		case "hostname":
			err = d.readString(&n.hostname)
		case "os":
			err = d.readString(&n.os)
		default:
			err = j.skip(4)
		}
		if err != nil {
			return fmt.Errorf("Hostinfo: %w", err)
		}
	}
}

// entry builds the compact form of the node just read.
func (d *Decoder) entry() *entry {
	n := &d.node
	e := &entry{
		id:       tailcfg.NodeID(n.id),
		user:     tailcfg.UserID(n.user),
		key:      n.key,
		disco:    n.disco,
		homeDERP: int(n.homeDERP),
		online:   n.online,
		expired:  n.expired,
		wgOnly:   n.wgOnly,
	}
	if e.homeDERP == 0 && n.derp.len > 0 {
		e.homeDERP = legacyRegion(n.str(n.derp))
	}
	e.keyExpirySec, e.keyExpiryNsec = splitTime(n.keyExpiry)
	e.lastSeenSec, e.lastSeenNsec = splitTime(n.lastSeen)
	if os := n.str(n.os); len(os) > 0 {
		e.os = d.intern(os)
	}
	if len(n.tags) > 0 {
		e.tags = d.intern(n.tags)
	}
	name, stable, host := n.str(n.name), n.str(n.stableID), n.str(n.hostname)
	name, stable = name[:min(len(name), 0xffff)], stable[:min(len(stable), 0xffff)]
	e.nameLen, e.stableLen = uint16(len(name)), uint16(len(stable))
	e.hostIsLabel = len(host) > 0 && bytes.Equal(host, firstLabelBytes(name))
	d.text = append(append(d.text[:0], name...), stable...)
	if !e.hostIsLabel {
		d.text = append(d.text, host...)
	}
	e.text = string(d.text)

	e.addrs = string(n.addrs)
	switch {
	case !n.allowedSet || n.apiOnly || bytes.Equal(n.allowed, n.addrs):
		e.allowed = e.addrs
	default:
		e.allowed = string(n.allowed)
	}
	e.eps = string(n.eps)
	return e
}

func firstLabelBytes(name []byte) []byte {
	if i := bytes.IndexByte(name, '.'); i >= 0 {
		return name[:i]
	}
	return name
}

// legacyRegion returns the region of a legacy DERP string
// ("127.3.3.40:<region>"), or 0.
func legacyRegion(s []byte) int {
	var b [32]byte
	packed, err := parseAddrPort(b[:0], s)
	if err != nil || len(packed) == 0 || packed[0] == tagZero {
		return 0
	}
	ap, _ := nextAddrPort(string(packed))
	if ap.Addr() != tailcfg.DerpMagicIP {
		return 0
	}
	return int(ap.Port())
}

// intern returns the canonical handle of an OS name or a set of tags;
// there are few.
func (d *Decoder) intern(b []byte) unique.Handle[string] {
	if h, ok := d.os[string(b)]; ok {
		return h
	}
	h := unique.Make(string(b))
	if d.os == nil {
		d.os = make(map[string]unique.Handle[string])
	}
	if len(d.os) < 64 {
		d.os[h.Value()] = h
	}
	return h
}
