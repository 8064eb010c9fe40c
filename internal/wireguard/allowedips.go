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
// Peers are added and removed one at a time; the Device's lock guards it.
type routeTable struct {
	routes map[netip.Prefix]*peer
	bits4  []int // distinct IPv4 prefix lengths, longest first
	bits6  []int
	n4     [33]int32 // prefixes in routes per length
	n6     [129]int32
	// shadowed counts prefixes a later peer took over from another. While
	// it is zero, removing a peer's prefixes removes exactly its routes.
	shadowed int
}

func newRouteTable(peers map[key.NodePublic]*peer) *routeTable {
	t := &routeTable{routes: make(map[netip.Prefix]*peer)}
	for _, p := range peers {
		t.add(p)
	}
	return t
}

// canon returns pfx in the form the table keys it by.
func canon(pfx netip.Prefix) netip.Prefix {
	if pfx.Addr().Is4In6() && pfx.Bits() >= 96 {
		pfx = netip.PrefixFrom(pfx.Addr().Unmap(), pfx.Bits()-96)
	}
	return pfx.Masked()
}

// add routes p's allowed IPs to p; a later peer wins a duplicate prefix.
func (t *routeTable) add(p *peer) {
	for _, pfx := range p.allowed {
		if !pfx.IsValid() {
			continue
		}
		pfx = canon(pfx)
		switch q := t.routes[pfx]; {
		case q == nil:
			t.count(pfx, 1)
		case q != p:
			t.shadowed++
		}
		t.routes[pfx] = p
	}
}

// remove drops p's routes. It reports false, changing nothing, when
// another peer's route might have been hidden under one of p's: then only
// a rebuild from all peers is right.
func (t *routeTable) remove(p *peer) bool {
	if t.shadowed > 0 {
		return false
	}
	for _, pfx := range p.allowed {
		if !pfx.IsValid() {
			continue
		}
		pfx = canon(pfx)
		if t.routes[pfx] == p {
			delete(t.routes, pfx)
			t.count(pfx, -1)
		}
	}
	return true
}

// count adjusts the number of prefixes of pfx's length and keeps the
// lists of lengths in use.
func (t *routeTable) count(pfx netip.Prefix, delta int32) {
	n, bits := &t.n6[pfx.Bits()], &t.bits6
	if pfx.Addr().Is4() {
		n, bits = &t.n4[pfx.Bits()], &t.bits4
	}
	*n += delta
	switch {
	case *n == 1 && delta > 0:
		// Insert in descending order (a loop: a sort of ints would link
		// a sort of its own).
		b := pfx.Bits()
		*bits = append(*bits, b)
		i := len(*bits) - 1
		for ; i > 0 && (*bits)[i-1] < b; i-- {
			(*bits)[i] = (*bits)[i-1]
		}
		(*bits)[i] = b
	case *n == 0:
		if i := slices.Index(*bits, pfx.Bits()); i >= 0 {
			*bits = slices.Delete(*bits, i, i+1)
		}
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
