package packet

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
)

// sum adds b to the running one's-complement sum acc (RFC 1071), reading b
// as big-endian 16-bit words; an odd final byte is padded with zero. The
// result is not folded. It adds 64-bit words with end-around carry, which
// folds to the same 16-bit sum (2^16 ≡ 1 modulo 2^16-1, and so is 2^64).
func sum(acc uint64, b []byte) uint64 {
	var c uint64
	for len(b) >= 32 {
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b), 0)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[8:]), c)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[16:]), c)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[24:]), c)
		acc, c = bits.Add64(acc, 0, c)
		acc += c // acc is 0 if that carried
		b = b[32:]
	}
	for len(b) >= 8 {
		acc = addCarry(acc, binary.BigEndian.Uint64(b))
		b = b[8:]
	}
	for len(b) >= 2 {
		acc = addCarry(acc, uint64(binary.BigEndian.Uint16(b)))
		b = b[2:]
	}
	if len(b) == 1 {
		acc = addCarry(acc, uint64(b[0])<<8)
	}
	return acc
}

// addCarry adds x to acc with end-around carry.
func addCarry(acc, x uint64) uint64 {
	s, c := bits.Add64(acc, x, 0)
	return s + c // s is at most 2^64-2 if it carried
}

// fold folds acc to 16 bits and returns its complement, the value that goes
// into a checksum field.
func fold(acc uint64) uint16 {
	for acc>>16 != 0 {
		acc = acc>>16 + acc&0xffff
	}
	return ^uint16(acc)
}

// Checksum returns the Internet checksum (RFC 1071) of b.
func Checksum(b []byte) uint16 { return fold(sum(0, b)) }

// pseudoSum returns the sum of the IPv4 or IPv6 pseudo header for a
// transport message of length n with protocol proto.
func pseudoSum(src, dst netip.Addr, proto Proto, n int) uint64 {
	var acc uint64
	if src.Is4() {
		s, d := src.As4(), dst.As4()
		acc = sum(acc, s[:])
		acc = sum(acc, d[:])
	} else {
		s, d := src.As16(), dst.As16()
		acc = sum(acc, s[:])
		acc = sum(acc, d[:])
	}
	return addCarry(addCarry(acc, uint64(proto)), uint64(n))
}

// transportChecksum returns the checksum of the transport message b
// (whose checksum field must be zero, or hold the value to verify) with
// the pseudo header of src, dst and proto.
func transportChecksum(src, dst netip.Addr, proto Proto, b []byte) uint16 {
	return fold(sum(pseudoSum(src, dst, proto, len(b)), b))
}

// TransportChecksum returns the checksum of the transport message b with
// the IPv4 or IPv6 pseudo header of src, dst and proto. Computed over a
// message whose checksum field is zero, it is the value to store there;
// over a received message, it is zero if the checksum is correct.
func TransportChecksum(src, dst netip.Addr, proto Proto, b []byte) uint16 {
	return transportChecksum(src, dst, proto, b)
}
