package packet

import (
	"encoding/binary"
	"errors"
	"net/netip"
)

var (
	errSmallBuffer = errors.New("packet: buffer too small")
	errTooLarge    = errors.New("packet: packet too large")
	errFamily      = errors.New("packet: source and destination must be valid addresses of one family")
)

// defaultTTL is the IPv4 TTL and IPv6 hop limit of built packets.
const defaultTTL = 64

// IPHeaderLen returns the length of the IP header the builders write for
// packets from src: 20 for IPv4, 40 for IPv6.
func IPHeaderLen(src netip.Addr) int {
	if src.Is4() {
		return IPv4HeaderLen
	}
	return IPv6HeaderLen
}

// PutIPv4Header writes into b a 20-byte IPv4 header without options, with
// TTL 64, the given identification and a computed checksum, for a packet
// carrying payloadLen bytes of protocol proto.
func PutIPv4Header(b []byte, proto Proto, src, dst netip.Addr, id uint16, payloadLen int) error {
	if !src.Is4() || !dst.Is4() {
		return errFamily
	}
	if len(b) < IPv4HeaderLen {
		return errSmallBuffer
	}
	if payloadLen < 0 || IPv4HeaderLen+payloadLen > MaxPacketLen {
		return errTooLarge
	}
	h := b[:IPv4HeaderLen]
	h[0] = 0x45 // version 4, 5 words
	h[1] = 0
	binary.BigEndian.PutUint16(h[2:4], uint16(IPv4HeaderLen+payloadLen))
	binary.BigEndian.PutUint16(h[4:6], id)
	h[6], h[7] = 0, 0 // flags and fragment offset
	h[8] = defaultTTL
	h[9] = byte(proto)
	h[10], h[11] = 0, 0
	s, d := src.As4(), dst.As4()
	copy(h[12:16], s[:])
	copy(h[16:20], d[:])
	binary.BigEndian.PutUint16(h[10:12], Checksum(h))
	return nil
}

// PutIPv6Header writes into b a 40-byte IPv6 header with hop limit 64 and
// the low 20 bits of flowLabel, for a packet carrying payloadLen bytes of
// protocol proto.
func PutIPv6Header(b []byte, proto Proto, src, dst netip.Addr, flowLabel uint32, payloadLen int) error {
	if !src.Is6() || !dst.Is6() {
		return errFamily
	}
	if len(b) < IPv6HeaderLen {
		return errSmallBuffer
	}
	if payloadLen < 0 || payloadLen > MaxPacketLen {
		return errTooLarge
	}
	h := b[:IPv6HeaderLen]
	binary.BigEndian.PutUint32(h[0:4], 6<<28|flowLabel&0xfffff)
	binary.BigEndian.PutUint16(h[4:6], uint16(payloadLen))
	h[6] = byte(proto)
	h[7] = defaultTTL
	s, d := src.As16(), dst.As16()
	copy(h[8:24], s[:])
	copy(h[24:40], d[:])
	return nil
}

// putIPHeader writes an IPv4 or IPv6 header, by the family of src, and
// returns its length. id is the IPv4 identification or IPv6 flow label.
func putIPHeader(b []byte, proto Proto, src, dst netip.Addr, id uint32, payloadLen int) (int, error) {
	if src.Is4() {
		return IPv4HeaderLen, PutIPv4Header(b, proto, src, dst, uint16(id), payloadLen)
	}
	return IPv6HeaderLen, PutIPv6Header(b, proto, src, dst, id, payloadLen)
}

// checkRoom reports an error unless a packet from src with a transport
// message of n bytes fits in b and in the IP length fields.
func checkRoom(b []byte, src, dst netip.Addr, n int) error {
	if src.Is4() != dst.Is4() || !src.IsValid() || !dst.IsValid() {
		return errFamily
	}
	hl := IPHeaderLen(src)
	if n > MaxPacketLen || src.Is4() && hl+n > MaxPacketLen {
		return errTooLarge
	}
	if len(b) < hl+n {
		return errSmallBuffer
	}
	return nil
}

// BuildUDP writes into b an IP packet carrying a UDP datagram from src to
// dst with the given payload, and returns its length. The UDP checksum is
// always computed. payload may already sit in place at
// b[IPHeaderLen(src.Addr())+UDPHeaderLen:]; it is then not moved.
func BuildUDP(b []byte, src, dst netip.AddrPort, payload []byte) (int, error) {
	n := UDPHeaderLen + len(payload)
	if err := checkRoom(b, src.Addr(), dst.Addr(), n); err != nil {
		return 0, err
	}
	hl := IPHeaderLen(src.Addr())
	u := b[hl : hl+n]
	copy(u[UDPHeaderLen:], payload)
	binary.BigEndian.PutUint16(u[0:2], src.Port())
	binary.BigEndian.PutUint16(u[2:4], dst.Port())
	binary.BigEndian.PutUint16(u[4:6], uint16(n))
	u[6], u[7] = 0, 0
	c := transportChecksum(src.Addr(), dst.Addr(), ProtoUDP, u)
	if c == 0 {
		c = 0xffff // zero means "no checksum"
	}
	binary.BigEndian.PutUint16(u[6:8], c)
	if _, err := putIPHeader(b, ProtoUDP, src.Addr(), dst.Addr(), 0, n); err != nil {
		return 0, err
	}
	return hl + n, nil
}
