package packet

import (
	"encoding/binary"
	"errors"
	"net/netip"
)

var errNotEchoRequest = errors.New("packet: not an ICMP echo request")
var errBadChecksum = errors.New("packet: bad checksum")

// putICMP fills in the 8-byte ICMP header at the start of m, a whole ICMP
// message whose data is already in place, including its checksum.
func putICMP(m []byte, src, dst netip.Addr, typ, code uint8, id, seq uint16) {
	m[0], m[1] = typ, code
	m[2], m[3] = 0, 0
	binary.BigEndian.PutUint16(m[4:6], id)
	binary.BigEndian.PutUint16(m[6:8], seq)
	var c uint16
	if src.Is4() {
		c = Checksum(m)
	} else {
		c = transportChecksum(src, dst, ProtoICMPv6, m)
	}
	binary.BigEndian.PutUint16(m[2:4], c)
}

// BuildEchoRequest writes into b an ICMP (IPv4) or ICMPv6 (IPv6) echo
// request from src to dst with the given identifier, sequence number and
// data, and returns its length. data may already sit in place after the
// 8-byte ICMP header.
func BuildEchoRequest(b []byte, src, dst netip.Addr, id, seq uint16, data []byte) (int, error) {
	n := ICMPHeaderLen + len(data)
	if err := checkRoom(b, src, dst, n); err != nil {
		return 0, err
	}
	hl := IPHeaderLen(src)
	m := b[hl : hl+n]
	copy(m[ICMPHeaderLen:], data)
	typ, proto := uint8(ICMPv4EchoRequest), ProtoICMPv4
	if !src.Is4() {
		typ, proto = ICMPv6EchoRequest, ProtoICMPv6
	}
	putICMP(m, src, dst, typ, 0, id, seq)
	if _, err := putIPHeader(b, proto, src, dst, 0, n); err != nil {
		return 0, err
	}
	return hl + n, nil
}

// EchoReply writes into dst the reply to the ICMP or ICMPv6 echo request
// packet req and returns its length. The reply goes from the request's
// destination back to its source with the same identifier, sequence number
// and data, a plain IP header (no options or extension headers, TTL 64) and
// the request's IPv4 identification or IPv6 flow label inverted. A request
// with a bad checksum is an error. dst may be req itself.
func EchoReply(dst []byte, req []byte) (int, error) {
	var p Parsed
	if err := p.Decode(req); err != nil {
		return 0, err
	}
	if !p.IsEchoRequest() || p.moreFrags {
		return 0, errNotEchoRequest
	}
	if !p.ChecksumsValid() {
		return 0, errBadChecksum
	}
	m := p.Transport()
	n := len(m)
	if err := checkRoom(dst, p.Dst, p.Src, n); err != nil {
		return 0, err
	}
	id := ipID(&p)
	hl := IPHeaderLen(p.Dst)
	// The reply's header is no longer than the request's, so moving the
	// message first is safe when dst and req are the same buffer.
	copy(dst[hl:hl+n], m)
	typ, proto := uint8(ICMPv4EchoReply), ProtoICMPv4
	if p.Version == 6 {
		typ, proto = ICMPv6EchoReply, ProtoICMPv6
	}
	putICMP(dst[hl:hl+n], p.Dst, p.Src, typ, 0, p.ICMPID, p.ICMPSeq)
	if _, err := putIPHeader(dst, proto, p.Dst, p.Src, ^id, n); err != nil {
		return 0, err
	}
	return hl + n, nil
}

// ipID returns the IPv4 identification or IPv6 flow label of p.
func ipID(p *Parsed) uint32 {
	if p.Version == 4 {
		return uint32(binary.BigEndian.Uint16(p.b[4:6]))
	}
	return binary.BigEndian.Uint32(p.b[0:4]) & 0xfffff
}
