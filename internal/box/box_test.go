package box

import (
	"bytes"
	"crypto/rand"
	"testing"

	nacl "golang.org/x/crypto/nacl/box"
)

// TestMatchesNaCl checks every function against x/crypto's nacl/box, the
// reference implementation, on random keys, nonces and messages, and a low
// order peer key.
func TestMatchesNaCl(t *testing.T) {
	for i := 0; i < 50; i++ {
		pubA, privA, _ := nacl.GenerateKey(rand.Reader)
		pubB, privB, _ := nacl.GenerateKey(rand.Reader)
		if i == 0 {
			*pubB = [32]byte{} // low order: the all-zero product
		}
		var nonce [24]byte
		rand.Read(nonce[:])
		msg := make([]byte, i*7)
		rand.Read(msg)

		var want, got [32]byte
		nacl.Precompute(&want, pubB, privA)
		Precompute(&got, pubB, privA)
		if got != want {
			t.Fatalf("Precompute differs: %x vs %x", got, want)
		}
		sealed := Seal([]byte("prefix"), msg, &nonce, pubB, privA)
		ref := nacl.Seal([]byte("prefix"), msg, &nonce, pubB, privA)
		if !bytes.Equal(sealed, ref) {
			t.Fatalf("Seal differs from nacl/box")
		}
		if s := SealShared(nil, msg, &nonce, &got); !bytes.Equal(s, ref[6:]) {
			t.Fatalf("SealShared differs from nacl/box")
		}
		if i == 0 {
			continue
		}
		plain, ok := Open(nil, sealed[6:], &nonce, pubA, privB)
		if !ok || !bytes.Equal(plain, msg) {
			t.Fatalf("Open: ok=%v", ok)
		}
		var kB [32]byte
		Precompute(&kB, pubA, privB)
		if plain, ok := OpenShared(nil, sealed[6:], &nonce, &kB); !ok || !bytes.Equal(plain, msg) {
			t.Fatalf("OpenShared: ok=%v", ok)
		}
		sealed[len(sealed)-1] ^= 1
		if _, ok := Open(nil, sealed[6:], &nonce, pubA, privB); ok {
			t.Fatal("Open accepted a tampered message")
		}
		if _, ok := OpenShared(nil, sealed[6:9], &nonce, &kB); ok {
			t.Fatal("OpenShared accepted a truncated message")
		}
	}
}
