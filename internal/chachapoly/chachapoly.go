// Package chachapoly provides ChaCha20-Poly1305 (RFC 8439) and
// XChaCha20-Poly1305, the AEADs of WireGuard and of Noise, from the copy
// the standard library already links for TLS.
//
// crypto/tls links the standard library's vendored ChaCha20-Poly1305 into
// every binary that uses it, and golang.org/x/crypto/chacha20poly1305
// would link a second copy of the same code (about 37 KB of the stripped
// CLI). The standard library does not export its copy, but crypto/hpke
// holds its constructor in an unexported field: with Go 1.26 this package
// takes it from there once, checking the field's name and type, and panics
// at start-up if it is not there (every test of the package fails then).
// With later toolchains, whose crypto/hpke has not been checked, it uses
// golang.org/x/crypto/chacha20poly1305.
package chachapoly

import (
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"math/bits"
)

const (
	// KeySize is the size of a key.
	KeySize = 32
	// NonceSize is the size of a ChaCha20-Poly1305 nonce.
	NonceSize = 12
	// NonceSizeX is the size of an XChaCha20-Poly1305 nonce.
	NonceSizeX = 24
	// Overhead is the size of the authentication tag.
	Overhead = 16
)

// NewX returns an XChaCha20-Poly1305 AEAD with a 32-byte key, whose
// 24-byte nonces may be random.
func NewX(key []byte) (cipher.AEAD, error) {
	if len(key) != KeySize {
		return nil, errors.New("chachapoly: bad key length")
	}
	x := &xAEAD{}
	copy(x.key[:], key)
	return x, nil
}

// xAEAD derives a ChaCha20-Poly1305 key from the first 16 bytes of each
// nonce with HChaCha20 and uses the last 8 as the nonce.
type xAEAD struct{ key [KeySize]byte }

func (*xAEAD) NonceSize() int { return NonceSizeX }
func (*xAEAD) Overhead() int  { return Overhead }

func (x *xAEAD) inner(nonce []byte) (cipher.AEAD, [NonceSize]byte) {
	if len(nonce) != NonceSizeX {
		panic("chachapoly: bad nonce length passed to XChaCha20-Poly1305")
	}
	var sub [KeySize]byte
	hChaCha20(&sub, &x.key, (*[16]byte)(nonce[:16]))
	a, _ := New(sub[:]) // the key size is right
	var n [NonceSize]byte
	copy(n[4:], nonce[16:])
	return a, n
}

func (x *xAEAD) Seal(dst, nonce, plaintext, additionalData []byte) []byte {
	a, n := x.inner(nonce)
	return a.Seal(dst, n[:], plaintext, additionalData)
}

func (x *xAEAD) Open(dst, nonce, ciphertext, additionalData []byte) ([]byte, error) {
	a, n := x.inner(nonce)
	return a.Open(dst, n[:], ciphertext, additionalData)
}

// hChaCha20 is HChaCha20 (draft-irtf-cfrg-xchacha, 2.2): the ChaCha20
// block function on the key and a 16-byte nonce, without the final
// addition, keeping the first and last rows.
func hChaCha20(out *[KeySize]byte, key *[KeySize]byte, nonce *[16]byte) {
	var s [16]uint32
	s[0], s[1], s[2], s[3] = 0x61707865, 0x3320646e, 0x79622d32, 0x6b206574
	for i := 0; i < 8; i++ {
		s[4+i] = binary.LittleEndian.Uint32(key[4*i:])
	}
	for i := 0; i < 4; i++ {
		s[12+i] = binary.LittleEndian.Uint32(nonce[4*i:])
	}
	qr := func(a, b, c, d int) {
		s[a] += s[b]
		s[d] = bits.RotateLeft32(s[d]^s[a], 16)
		s[c] += s[d]
		s[b] = bits.RotateLeft32(s[b]^s[c], 12)
		s[a] += s[b]
		s[d] = bits.RotateLeft32(s[d]^s[a], 8)
		s[c] += s[d]
		s[b] = bits.RotateLeft32(s[b]^s[c], 7)
	}
	for i := 0; i < 10; i++ {
		qr(0, 4, 8, 12)
		qr(1, 5, 9, 13)
		qr(2, 6, 10, 14)
		qr(3, 7, 11, 15)
		qr(0, 5, 10, 15)
		qr(1, 6, 11, 12)
		qr(2, 7, 8, 13)
		qr(3, 4, 9, 14)
	}
	for i := 0; i < 4; i++ {
		binary.LittleEndian.PutUint32(out[4*i:], s[i])
		binary.LittleEndian.PutUint32(out[16+4*i:], s[12+i])
	}
}
