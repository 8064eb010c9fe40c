// Package stun builds STUN binding requests the way Tailscale nodes send
// them and parses the responses (RFC 5389).
//
// Tailscale's STUN servers answer only requests that carry the SOFTWARE
// attribute "tailnode" followed by a correct FINGERPRINT, so Request builds
// exactly that 40-byte message.
package stun

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"net/netip"
)

const (
	headerLen   = 20
	magicCookie = 0x2112a442
	software    = "tailnode" // 8 bytes: no padding needed

	typeBindingRequest  = 0x0001
	typeBindingResponse = 0x0101

	attrMappedAddress    = 0x0001
	attrXORMappedAddress = 0x0020
	attrXORMappedAlt     = 0x8020 // seen from servers that set the optional bit
	attrSoftware         = 0x8022
	attrFingerprint      = 0x8028

	fingerprintXOR = 0x5354554e
	fingerprintLen = 8 // attribute header and CRC
)

// RequestLen is the length of the binding request Request builds.
const RequestLen = headerLen + 4 + len(software) + fingerprintLen

// TxID is a STUN transaction ID.
type TxID [12]byte

// NewTxID returns a random transaction ID.
func NewTxID() TxID {
	var t TxID
	if _, err := rand.Read(t[:]); err != nil {
		panic("stun: no randomness: " + err.Error())
	}
	return t
}

// Errors returned by the parsers.
var (
	ErrNotSTUN            = errors.New("stun: not a STUN message")
	ErrNotSuccessResponse = errors.New("stun: not a binding success response")
	ErrMalformedAttrs     = errors.New("stun: malformed attributes")
	ErrNoAddress          = errors.New("stun: no mapped address")
	ErrNotBindingRequest  = errors.New("stun: not a binding request")
	ErrWrongSoftware      = errors.New("stun: request not from tailnode software")
	ErrNoFingerprint      = errors.New("stun: request does not end in a fingerprint")
	ErrWrongFingerprint   = errors.New("stun: request fingerprint mismatch")
)

// Is reports whether b looks like a STUN message: at least a header, the
// top two bits zero and the magic cookie in place.
func Is(b []byte) bool {
	return len(b) >= headerLen && b[0]&0xc0 == 0 && binary.BigEndian.Uint32(b[4:8]) == magicCookie
}

// IsBinding reports whether b is a STUN binding message (request or
// response), the class of packet a UDP socket shared with WireGuard and
// disco routes to STUN.
func IsBinding(b []byte) bool { return Is(b) && b[1] == 0x01 }

// Request appends a binding request with transaction ID tx to b.
func Request(b []byte, tx TxID) []byte {
	start := len(b)
	b = binary.BigEndian.AppendUint16(b, typeBindingRequest)
	b = binary.BigEndian.AppendUint16(b, uint16(RequestLen-headerLen))
	b = binary.BigEndian.AppendUint32(b, magicCookie)
	b = append(b, tx[:]...)
	b = binary.BigEndian.AppendUint16(b, attrSoftware)
	b = binary.BigEndian.AppendUint16(b, uint16(len(software)))
	b = append(b, software...)
	fp := fingerprint(b[start:])
	b = binary.BigEndian.AppendUint16(b, attrFingerprint)
	b = binary.BigEndian.AppendUint16(b, 4)
	return binary.BigEndian.AppendUint32(b, fp)
}

func fingerprint(b []byte) uint32 { return crc32(b) ^ fingerprintXOR }

// crc32 is the CRC-32 of ISO 3309 (IEEE), which FINGERPRINT uses, a bit at
// a time: STUN messages are short, and hash/crc32 would link 5 KB of
// tables and assembly for them.
func crc32(b []byte) uint32 {
	c := ^uint32(0)
	for _, x := range b {
		c ^= uint32(x)
		for i := 0; i < 8; i++ {
			c = c>>1 ^ 0xedb88320&-(c&1)
		}
	}
	return ^c
}

// eachAttr calls fn for each attribute in b, stopping at the first error.
func eachAttr(b []byte, fn func(typ uint16, val []byte) error) error {
	for len(b) > 0 {
		if len(b) < 4 {
			return ErrMalformedAttrs
		}
		typ := binary.BigEndian.Uint16(b)
		n := int(binary.BigEndian.Uint16(b[2:]))
		padded := (n + 3) &^ 3
		b = b[4:]
		if padded > len(b) {
			return ErrMalformedAttrs
		}
		if err := fn(typ, b[:n]); err != nil {
			return err
		}
		b = b[padded:]
	}
	return nil
}

// ParseResponse parses a binding success response and returns its
// transaction ID and the mapped address: XOR-MAPPED-ADDRESS (0x0020 or
// 0x8020) if present, else MAPPED-ADDRESS.
func ParseResponse(b []byte) (TxID, netip.AddrPort, error) {
	var tx TxID
	if !Is(b) {
		return tx, netip.AddrPort{}, ErrNotSTUN
	}
	copy(tx[:], b[8:headerLen])
	if binary.BigEndian.Uint16(b) != typeBindingResponse {
		return tx, netip.AddrPort{}, ErrNotSuccessResponse
	}
	n := int(binary.BigEndian.Uint16(b[2:]))
	attrs := b[headerLen:]
	if n > len(attrs) {
		return tx, netip.AddrPort{}, ErrMalformedAttrs
	}
	attrs = attrs[:n]
	var xored, plain netip.AddrPort
	err := eachAttr(attrs, func(typ uint16, val []byte) error {
		switch typ {
		case attrXORMappedAddress, attrXORMappedAlt:
			ap, ok := decodeAddress(val, &tx)
			if !ok {
				return ErrMalformedAttrs
			}
			xored = ap
		case attrMappedAddress:
			ap, ok := decodeAddress(val, nil)
			if !ok {
				return ErrMalformedAttrs
			}
			plain = ap
		}
		return nil
	})
	switch {
	case err != nil:
		return TxID{}, netip.AddrPort{}, err
	case xored.IsValid():
		return tx, xored, nil
	case plain.IsValid():
		return tx, plain, nil
	}
	return tx, netip.AddrPort{}, ErrNoAddress
}

// decodeAddress decodes a (XOR-)MAPPED-ADDRESS value: reserved byte, family
// (1 IPv4, 2 IPv6), port, address. With tx non-nil the port and address are
// XORed with the cookie and transaction ID.
func decodeAddress(v []byte, tx *TxID) (netip.AddrPort, bool) {
	if len(v) < 4 {
		return netip.AddrPort{}, false
	}
	var n int
	switch v[1] {
	case 1:
		n = 4
	case 2:
		n = 16
	default:
		return netip.AddrPort{}, false
	}
	if len(v) < 4+n {
		return netip.AddrPort{}, false
	}
	port := binary.BigEndian.Uint16(v[2:])
	var ip [16]byte
	copy(ip[:], v[4:4+n])
	if tx != nil {
		port ^= magicCookie >> 16
		var mask [16]byte
		binary.BigEndian.PutUint32(mask[:], magicCookie)
		copy(mask[4:], tx[:])
		for i := range n {
			ip[i] ^= mask[i]
		}
	}
	var addr netip.Addr
	if n == 4 {
		addr = netip.AddrFrom4([4]byte(ip[:4]))
	} else {
		addr = netip.AddrFrom16(ip).Unmap()
	}
	return netip.AddrPortFrom(addr, port), true
}

// ParseBindingRequest parses a binding request and returns its transaction
// ID. Like Tailscale's STUN servers it accepts only requests with SOFTWARE
// "tailnode" whose last attribute is a correct FINGERPRINT.
func ParseBindingRequest(b []byte) (TxID, error) {
	var tx TxID
	if !Is(b) {
		return tx, ErrNotSTUN
	}
	if binary.BigEndian.Uint16(b) != typeBindingRequest {
		return tx, ErrNotBindingRequest
	}
	copy(tx[:], b[8:headerLen])
	var softwareOK bool
	var last uint16
	var fp uint32
	err := eachAttr(b[headerLen:], func(typ uint16, val []byte) error {
		last = typ
		switch {
		case typ == attrSoftware && string(val) == software:
			softwareOK = true
		case typ == attrFingerprint && len(val) == 4:
			fp = binary.BigEndian.Uint32(val)
		}
		return nil
	})
	switch {
	case err != nil:
		return TxID{}, err
	case !softwareOK:
		return TxID{}, ErrWrongSoftware
	case last != attrFingerprint:
		return TxID{}, ErrNoFingerprint
	case fp != fingerprint(b[:len(b)-fingerprintLen]):
		return TxID{}, ErrWrongFingerprint
	}
	return tx, nil
}

// Response appends to b a binding success response for tx that carries ap
// in a single XOR-MAPPED-ADDRESS attribute, as Tailscale's servers answer.
func Response(b []byte, tx TxID, ap netip.AddrPort) []byte {
	addr := ap.Addr().Unmap()
	fam, n := byte(1), 4
	if addr.Is6() {
		fam, n = 2, 16
	}
	b = binary.BigEndian.AppendUint16(b, typeBindingResponse)
	b = binary.BigEndian.AppendUint16(b, uint16(8+n))
	b = binary.BigEndian.AppendUint32(b, magicCookie)
	b = append(b, tx[:]...)
	b = binary.BigEndian.AppendUint16(b, attrXORMappedAddress)
	b = binary.BigEndian.AppendUint16(b, uint16(4+n))
	b = append(b, 0, fam)
	b = binary.BigEndian.AppendUint16(b, ap.Port()^magicCookie>>16)
	var mask [16]byte
	binary.BigEndian.PutUint32(mask[:], magicCookie)
	copy(mask[4:], tx[:])
	ip := addr.As16()
	if n == 4 {
		copy(ip[:4], ip[12:])
	}
	for i := range n {
		b = append(b, ip[i]^mask[i])
	}
	return b
}
