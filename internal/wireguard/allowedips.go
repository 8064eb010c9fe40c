package wireguard

import (
	"encoding/binary"
	"net/netip"
	"slices"

	"github.com/microlink-go/microlink/internal/key"
)

// routeTable maps IP prefixes to peers by longest-prefix match. It holds
// one hash map entry per prefix and the distinct prefix lengths in use, so
// a lookup costs one map probe per distinct length (usually two or three).
// A routeTable is immutable once built.
type routeTable struct {
	routes map[netip.Prefix]*peer
	bits4  []int // distinct IPv4 prefix lengths, longest first
	bits6  []int
}

func newRouteTable(peers map[key.NodePublic]*peer) *routeTable {
	t := &routeTable{routes: make(map[netip.Prefix]*peer)}
	for _, p := range peers {
		for _, pfx := range p.allowed {
			t.insert(pfx, p)
		}
	}
	desc := func(a, b int) int { return b - a }
	slices.SortFunc(t.bits4, desc)
	slices.SortFunc(t.bits6, desc)
	return t
}

func (t *routeTable) insert(pfx netip.Prefix, p *peer) {
	if !pfx.IsValid() {
		return
	}
	if pfx.Addr().Is4In6() && pfx.Bits() >= 96 {
		pfx = netip.PrefixFrom(pfx.Addr().Unmap(), pfx.Bits()-96)
	}
	pfx = pfx.Masked()
	t.routes[pfx] = p // a later peer wins a duplicate prefix
	bits := &t.bits6
	if pfx.Addr().Is4() {
		bits = &t.bits4
	}
	if !slices.Contains(*bits, pfx.Bits()) {
		*bits = append(*bits, pfx.Bits())
	}
}

func (t *routeTable) lookup(a netip.Addr) *peer {
	bits := t.bits6
	if a.Is4() {
		bits = t.bits4
	}
	for _, b := range bits {
		pfx, err := a.Prefix(b)
		if err != nil {
			continue
		}
		if p := t.routes[pfx]; p != nil {
			return p
		}
	}
	return nil
}

// packetAddrs returns the source and destination of an IPv4 or IPv6
// packet and the length the header says it has. ok is false if the packet
// is too short or not IP.
func packetAddrs(pkt []byte) (src, dst netip.Addr, length int, ok bool) {
	if len(pkt) == 0 {
		return src, dst, 0, false
	}
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < 20 {
			return src, dst, 0, false
		}
		length = int(binary.BigEndian.Uint16(pkt[2:4]))
		if length < 20 || length > len(pkt) {
			return src, dst, 0, false
		}
		src = netip.AddrFrom4([4]byte(pkt[12:16]))
		dst = netip.AddrFrom4([4]byte(pkt[16:20]))
		return src, dst, length, true
	case 6:
		if len(pkt) < 40 {
			return src, dst, 0, false
		}
		length = 40 + int(binary.BigEndian.Uint16(pkt[4:6]))
		if length > len(pkt) {
			return src, dst, 0, false
		}
		src = netip.AddrFrom16([16]byte(pkt[8:24]))
		dst = netip.AddrFrom16([16]byte(pkt[24:40]))
		return src, dst, length, true
	}
	return src, dst, 0, false
}

func leUint32(b []byte) uint32 { return binary.LittleEndian.Uint32(b) }
