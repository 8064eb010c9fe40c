// Package blake2s implements BLAKE2s (RFC 7693), the hash of WireGuard's
// and Noise's handshakes, keyed for WireGuard's MACs.
//
// It is plain Go: BLAKE2s runs only in handshakes and their MACs, never
// per packet, so the assembly of golang.org/x/crypto/blake2s (its SSE2,
// SSSE3 and SSE4 variants are 12 KB of code) buys little here: a mac1
// takes about 1.3 µs here against 0.8 µs (BenchmarkMAC1), next to the tens
// of microseconds of a handshake's X25519 operations.
package blake2s

import (
	"encoding/binary"
	"errors"
	"hash"
	"math/bits"
)

const (
	// Size is the size of a BLAKE2s-256 sum.
	Size = 32
	// Size128 is the size of a BLAKE2s-128 sum.
	Size128 = 16
	// BlockSize is the block size of BLAKE2s.
	BlockSize = 64
)

var iv = [8]uint32{0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19}

var sigma = [10][16]uint8{
	{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
	{14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
	{11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
	{7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
	{9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
	{2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
	{12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
	{13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
	{6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
	{10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
}

var errKeySize = errors.New("blake2s: key longer than 32 bytes")

// Digest is a BLAKE2s hash.Hash.
type Digest struct {
	h    [8]uint32
	t    uint64 // bytes compressed
	buf  [BlockSize]byte
	n    int // bytes in buf
	size int
	key  [Size]byte
	klen int
}

// New256 returns a BLAKE2s-256 hash, keyed (a MAC) unless key is empty.
func New256(key []byte) (*Digest, error) { return newDigest(Size, key) }

// New128 returns a keyed BLAKE2s-128 hash; key must not be empty.
func New128(key []byte) (*Digest, error) {
	if len(key) == 0 {
		return nil, errors.New("blake2s: BLAKE2s-128 needs a key")
	}
	return newDigest(Size128, key)
}

func newDigest(size int, key []byte) (*Digest, error) {
	if len(key) > Size {
		return nil, errKeySize
	}
	d := &Digest{size: size, klen: len(key)}
	copy(d.key[:], key)
	d.Reset()
	return d, nil
}

// Sum256 returns the BLAKE2s-256 sum of b.
func Sum256(b []byte) [Size]byte {
	var d Digest
	d.size = Size
	d.Reset()
	d.Write(b)
	var out [Size]byte
	d.sum(out[:0])
	return out
}

// Reset starts the hash over, with the same key.
func (d *Digest) Reset() {
	d.h = iv
	d.h[0] ^= 0x01010000 ^ uint32(d.klen)<<8 ^ uint32(d.size)
	d.t, d.n = 0, 0
	if d.klen > 0 {
		d.buf = [BlockSize]byte{}
		copy(d.buf[:], d.key[:d.klen])
		d.n = BlockSize
	}
}

// Size returns the size of the sum.
func (d *Digest) Size() int { return d.size }

// BlockSize returns the block size, 64.
func (d *Digest) BlockSize() int { return BlockSize }

// Write adds b to the hash. It never fails.
func (d *Digest) Write(b []byte) (int, error) {
	n := len(b)
	// A full buffer is compressed only when more input follows: the last
	// block is compressed as the final one.
	for len(b) > 0 {
		if d.n == BlockSize {
			d.t += BlockSize
			d.compress(&d.buf, false)
			d.n = 0
		}
		m := copy(d.buf[d.n:], b)
		d.n += m
		b = b[m:]
	}
	return n, nil
}

// Sum appends the sum to b, leaving the hash as it was.
func (d *Digest) Sum(b []byte) []byte {
	c := *d
	return c.sum(b)
}

func (d *Digest) sum(b []byte) []byte {
	d.t += uint64(d.n)
	clear(d.buf[d.n:])
	d.compress(&d.buf, true)
	var out [Size]byte
	for i, w := range d.h {
		binary.LittleEndian.PutUint32(out[4*i:], w)
	}
	return append(b, out[:d.size]...)
}

func (d *Digest) compress(block *[BlockSize]byte, final bool) {
	var m [16]uint32
	for i := range m {
		m[i] = binary.LittleEndian.Uint32(block[4*i:])
	}
	v0, v1, v2, v3, v4, v5, v6, v7 := d.h[0], d.h[1], d.h[2], d.h[3], d.h[4], d.h[5], d.h[6], d.h[7]
	v8, v9, v10, v11 := iv[0], iv[1], iv[2], iv[3]
	v12, v13, v14, v15 := iv[4]^uint32(d.t), iv[5]^uint32(d.t>>32), iv[6], iv[7]
	if final {
		v14 = ^v14
	}
	for r := range sigma {
		s := &sigma[r]
		v0, v4, v8, v12 = g(v0, v4, v8, v12, m[s[0]], m[s[1]])
		v1, v5, v9, v13 = g(v1, v5, v9, v13, m[s[2]], m[s[3]])
		v2, v6, v10, v14 = g(v2, v6, v10, v14, m[s[4]], m[s[5]])
		v3, v7, v11, v15 = g(v3, v7, v11, v15, m[s[6]], m[s[7]])
		v0, v5, v10, v15 = g(v0, v5, v10, v15, m[s[8]], m[s[9]])
		v1, v6, v11, v12 = g(v1, v6, v11, v12, m[s[10]], m[s[11]])
		v2, v7, v8, v13 = g(v2, v7, v8, v13, m[s[12]], m[s[13]])
		v3, v4, v9, v14 = g(v3, v4, v9, v14, m[s[14]], m[s[15]])
	}
	d.h[0] ^= v0 ^ v8
	d.h[1] ^= v1 ^ v9
	d.h[2] ^= v2 ^ v10
	d.h[3] ^= v3 ^ v11
	d.h[4] ^= v4 ^ v12
	d.h[5] ^= v5 ^ v13
	d.h[6] ^= v6 ^ v14
	d.h[7] ^= v7 ^ v15
}

// g is BLAKE2s's mixing function (RFC 7693, 3.1).
func g(a, b, c, d, x, y uint32) (uint32, uint32, uint32, uint32) {
	a += b + x
	d = bits.RotateLeft32(d^a, -16)
	c += d
	b = bits.RotateLeft32(b^c, -12)
	a += b + y
	d = bits.RotateLeft32(d^a, -8)
	c += d
	b = bits.RotateLeft32(b^c, -7)
	return a, b, c, d
}

var _ hash.Hash = (*Digest)(nil)
