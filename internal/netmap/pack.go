package netmap

import (
	"encoding/binary"
	"net/netip"
)

// Address lists are stored packed: a netip.Prefix or AddrPort takes 32
// bytes, mostly room for an IPv6 zone that tailnet addresses never have,
// and a peer has several. Packed, each item is a tag byte and the address
// bytes, then a prefix length or a big-endian port: 6 bytes for an IPv4
// prefix, 7 for an IPv4 endpoint. Only this file reads or writes the form.
const (
	tagZero  = 0 // the zero Prefix or AddrPort; nothing follows
	tag4     = 4 // IPv4: 4 address bytes follow
	tag6     = 6 // IPv6: 16 address bytes follow
	tag6Zone = 7 // IPv6 with a zone: uvarint length, zone, 16 address bytes
)

func appendAddr(b []byte, a netip.Addr) []byte {
	switch {
	case a.Is4():
		a4 := a.As4()
		return append(append(b, tag4), a4[:]...)
	case a.Zone() != "":
		b = append(b, tag6Zone)
		b = binary.AppendUvarint(b, uint64(len(a.Zone())))
		b = append(b, a.Zone()...)
	default:
		b = append(b, tag6)
	}
	a16 := a.As16()
	return append(b, a16[:]...)
}

// nextAddr decodes the address that starts s (not tagZero) and returns the
// rest of s.
func nextAddr(s string) (netip.Addr, string) {
	tag := s[0]
	s = s[1:]
	if tag == tag4 {
		return netip.AddrFrom4([4]byte{s[0], s[1], s[2], s[3]}), s[4:]
	}
	zone := ""
	if tag == tag6Zone {
		n, w := binary.Uvarint([]byte(s[:min(len(s), binary.MaxVarintLen64)]))
		zone, s = s[w:w+int(n)], s[w+int(n):]
	}
	var a16 [16]byte
	copy(a16[:], s)
	return netip.AddrFrom16(a16).WithZone(zone), s[16:]
}

// appendPrefix appends p packed. An invalid prefix packs as the zero one.
func appendPrefix(b []byte, p netip.Prefix) []byte {
	if !p.IsValid() {
		return append(b, tagZero)
	}
	return append(appendAddr(b, p.Addr()), byte(p.Bits()))
}

// nextPrefix decodes the prefix that starts s and returns the rest of s.
func nextPrefix(s string) (netip.Prefix, string) {
	if s[0] == tagZero {
		return netip.Prefix{}, s[1:]
	}
	a, s := nextAddr(s)
	return netip.PrefixFrom(a, int(s[0])), s[1:]
}

// appendAddrPort appends ap packed. An AddrPort without a valid address
// packs as the zero one.
func appendAddrPort(b []byte, ap netip.AddrPort) []byte {
	if !ap.Addr().IsValid() {
		return append(b, tagZero)
	}
	return binary.BigEndian.AppendUint16(appendAddr(b, ap.Addr()), ap.Port())
}

// nextAddrPort decodes the AddrPort that starts s and returns the rest of s.
func nextAddrPort(s string) (netip.AddrPort, string) {
	if s[0] == tagZero {
		return netip.AddrPort{}, s[1:]
	}
	a, s := nextAddr(s)
	return netip.AddrPortFrom(a, uint16(s[0])<<8|uint16(s[1])), s[2:]
}

func packPrefixes(scratch []byte, pfxs []netip.Prefix) string {
	scratch = scratch[:0]
	for _, p := range pfxs {
		scratch = appendPrefix(scratch, p)
	}
	return string(scratch)
}

func packAddrPorts(scratch []byte, aps []netip.AddrPort) string {
	scratch = scratch[:0]
	for _, ap := range aps {
		scratch = appendAddrPort(scratch, ap)
	}
	return string(scratch)
}

// unpackPrefixes returns the prefixes of s, or nil if there are none.
func unpackPrefixes(s string) []netip.Prefix {
	n := 0
	for t := s; t != ""; n++ {
		_, t = nextPrefix(t)
	}
	if n == 0 {
		return nil
	}
	out := make([]netip.Prefix, n)
	for i := range out {
		out[i], s = nextPrefix(s)
	}
	return out
}

// unpackAddrPorts returns the AddrPorts of s, or nil if there are none.
func unpackAddrPorts(s string) []netip.AddrPort {
	n := 0
	for t := s; t != ""; n++ {
		_, t = nextAddrPort(t)
	}
	if n == 0 {
		return nil
	}
	out := make([]netip.AddrPort, n)
	for i := range out {
		out[i], s = nextAddrPort(s)
	}
	return out
}
