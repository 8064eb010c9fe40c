package wireguard

import (
	"crypto/hmac"
	"hash"

	"github.com/microlink-go/microlink/internal/blake2s"
)

// Noise protocol names.
const (
	NoiseConstruction = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
	Identifier        = "WireGuard v1 zx2c4 Jason@zx2c4.com"
	LabelMAC1         = "mac1----"
	LabelCookie       = "cookie--"
)

var (
	initialChainKey [blake2s.Size]byte
	initialHash     [blake2s.Size]byte
)

func init() {
	initialChainKey = blake2s.Sum256([]byte(NoiseConstruction))
	mixHash(&initialHash, &initialChainKey, []byte(Identifier))
}

func newBlake2s() hash.Hash {
	h, _ := blake2s.New256(nil)
	return h
}

func hmacBlake2s(out *[blake2s.Size]byte, key []byte, in ...[]byte) {
	m := hmac.New(newBlake2s, key)
	for _, b := range in {
		m.Write(b)
	}
	m.Sum(out[:0])
}

// kdf1, kdf2 and kdf3 are HKDF with HMAC-BLAKE2s producing one, two or
// three 32-byte outputs.
func kdf1(t0 *[32]byte, key, input []byte) {
	var prk [32]byte
	hmacBlake2s(&prk, key, input)
	hmacBlake2s(t0, prk[:], []byte{1})
	clear(prk[:])
}

func kdf2(t0, t1 *[32]byte, key, input []byte) {
	var prk [32]byte
	hmacBlake2s(&prk, key, input)
	hmacBlake2s(t0, prk[:], []byte{1})
	hmacBlake2s(t1, prk[:], t0[:], []byte{2})
	clear(prk[:])
}

func kdf3(t0, t1, t2 *[32]byte, key, input []byte) {
	var prk [32]byte
	hmacBlake2s(&prk, key, input)
	hmacBlake2s(t0, prk[:], []byte{1})
	hmacBlake2s(t1, prk[:], t0[:], []byte{2})
	hmacBlake2s(t2, prk[:], t1[:], []byte{3})
	clear(prk[:])
}

// mixHash sets dst = BLAKE2s(h || data).
func mixHash(dst, h *[32]byte, data []byte) {
	d := newBlake2s()
	d.Write(h[:])
	d.Write(data)
	d.Sum(dst[:0])
}

// mixKey sets dst to the first KDF output of chaining key c and data.
func mixKey(dst, c *[32]byte, data []byte) {
	kdf1(dst, c[:], data)
}
