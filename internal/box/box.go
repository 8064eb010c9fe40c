// Package box is NaCl's crypto_box (Curve25519, XSalsa20, Poly1305), the
// sealing that disco packets and the DERP client handshake use. It is built
// from x/crypto's curve25519, salsa20 and secretbox so that the binary does
// not link nacl/box, whose sealed-box extension pulls in BLAKE2b.
package box

import (
	"golang.org/x/crypto/curve25519"
	"golang.org/x/crypto/nacl/secretbox"
	"golang.org/x/crypto/salsa20/salsa"
)

// Overhead is the number of bytes a sealed message is longer than its
// plaintext.
const Overhead = secretbox.Overhead

// Precompute sets shared to the key shared by priv and peer: the HSalsa20
// of their X25519 product. A peer key of low order yields the key of an
// all-zero product, as in NaCl.
func Precompute(shared, peer, priv *[32]byte) {
	curve25519.ScalarMult(shared, priv, peer)
	var zeros [16]byte
	salsa.HSalsa20(shared, &zeros, shared, &salsa.Sigma)
}

// SealShared appends msg sealed with the precomputed key shared and nonce
// to out.
func SealShared(out, msg []byte, nonce *[24]byte, shared *[32]byte) []byte {
	return secretbox.Seal(out, msg, nonce, shared)
}

// OpenShared authenticates and decrypts sealed with the precomputed key
// shared and nonce, appending the plaintext to out.
func OpenShared(out, sealed []byte, nonce *[24]byte, shared *[32]byte) ([]byte, bool) {
	return secretbox.Open(out, sealed, nonce, shared)
}

// Seal appends msg sealed from priv to peer with nonce to out.
func Seal(out, msg []byte, nonce *[24]byte, peer, priv *[32]byte) []byte {
	var k [32]byte
	Precompute(&k, peer, priv)
	return secretbox.Seal(out, msg, nonce, &k)
}

// Open authenticates and decrypts sealed, sent between priv and peer with
// nonce, appending the plaintext to out.
func Open(out, sealed []byte, nonce *[24]byte, peer, priv *[32]byte) ([]byte, bool) {
	var k [32]byte
	Precompute(&k, peer, priv)
	return secretbox.Open(out, sealed, nonce, &k)
}
