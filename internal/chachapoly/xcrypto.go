//go:build go1.27

package chachapoly

import (
	"crypto/cipher"

	"golang.org/x/crypto/chacha20poly1305"
)

// New returns a ChaCha20-Poly1305 AEAD with a 32-byte key.
func New(key []byte) (cipher.AEAD, error) { return chacha20poly1305.New(key) }
