// Package key holds the Curve25519 keys a Tailscale node uses and their text forms.
//
// A node has three keys: the machine key identifies the device to the control
// server and is the static key of the ts2021 Noise session; the node key is the
// WireGuard static key and the node's address on DERP relays; the disco key
// authenticates path-discovery messages and is made fresh at every start.
// Public keys print as a prefix and 64 lowercase hex digits ("mkey:…",
// "nodekey:…", "discokey:…"); private keys as "privkey:…".
package key

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"

	"golang.org/x/crypto/curve25519"
)

// Len is the length in bytes of every key in this package.
const Len = 32

// Text prefixes of the key kinds.
const (
	MachinePublicPrefix = "mkey:"
	NodePublicPrefix    = "nodekey:"
	DiscoPublicPrefix   = "discokey:"
	PrivatePrefix       = "privkey:"
)

// Public is a raw Curve25519 public key.
type Public [Len]byte

// Private is a raw, clamped Curve25519 private key.
type Private [Len]byte

// NewPrivate returns a fresh random private key.
func NewPrivate() Private {
	var k Private
	if _, err := rand.Read(k[:]); err != nil {
		panic("key: no randomness: " + err.Error())
	}
	k.clamp()
	return k
}

func (k *Private) clamp() {
	k[0] &= 248
	k[31] = (k[31] & 127) | 64
}

// IsZero reports whether k is all zeros (no key).
func (k Private) IsZero() bool { return k == Private{} }

// Public returns the public half of k.
func (k Private) Public() Public {
	var p Public
	curve25519.ScalarBaseMult((*[32]byte)(&p), (*[32]byte)(&k))
	return p
}

// SharedSecret returns X25519(k, peer). It fails if the result is all zeros
// (a low-order peer key).
func (k Private) SharedSecret(peer Public) ([Len]byte, error) {
	var out [Len]byte
	s, err := curve25519.X25519(k[:], peer[:])
	if err != nil {
		return out, err
	}
	copy(out[:], s)
	return out, nil
}

// Equal compares two private keys in constant time.
func (k Private) Equal(o Private) bool { return subtle.ConstantTimeCompare(k[:], o[:]) == 1 }

// String returns the "privkey:" text form. Avoid logging it.
func (k Private) String() string { return PrivatePrefix + hex.EncodeToString(k[:]) }

// MarshalText implements encoding.TextMarshaler with the "privkey:" form.
func (k Private) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler for the "privkey:" form.
func (k *Private) UnmarshalText(b []byte) error {
	raw, err := parseHex(b, PrivatePrefix)
	if err != nil {
		return err
	}
	*k = Private(raw)
	return nil
}

// IsZero reports whether p is all zeros.
func (p Public) IsZero() bool { return p == Public{} }

// ShortString returns "[" + the first five characters of the base64 form + "]",
// the form Tailscale logs use, so log lines can be matched across implementations.
func (p Public) ShortString() string { return shortString(p) }

// Hex returns the 64 lowercase hex digits of p without a prefix.
func (p Public) Hex() string { return hex.EncodeToString(p[:]) }

// ParsePublicHex parses 64 hex digits with no prefix, as DERP's Derp-Public-Key
// header carries them.
func ParsePublicHex(s string) (Public, error) {
	raw, err := decodeHex([]byte(s))
	return Public(raw), err
}

// ErrBadKey reports a key text that does not parse.
var ErrBadKey = errors.New("key: malformed key text")

// parseHex parses prefix and 64 hex digits. It allocates only to report
// an error: the map decodes two keys for each of thousands of peers.
func parseHex(b []byte, prefix string) ([Len]byte, error) {
	if len(b) < len(prefix) || string(b[:len(prefix)]) != prefix {
		return [Len]byte{}, fmt.Errorf("%w: missing %q prefix", ErrBadKey, prefix)
	}
	return decodeHex(b[len(prefix):])
}

func decodeHex(h []byte) ([Len]byte, error) {
	var out [Len]byte
	if len(h) != 2*Len {
		return out, fmt.Errorf("%w: want %d hex digits, have %d", ErrBadKey, 2*Len, len(h))
	}
	if _, err := hex.Decode(out[:], h); err != nil {
		return out, fmt.Errorf("%w: %v", ErrBadKey, err)
	}
	return out, nil
}
