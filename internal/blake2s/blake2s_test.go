package blake2s

import (
	"bytes"
	"crypto/hmac"
	"encoding/hex"
	"hash"
	"math/rand"
	"testing"

	xblake2s "golang.org/x/crypto/blake2s"
)

// TestRFC7693 is the BLAKE2s-256 of "abc" from RFC 7693, appendix B.
func TestRFC7693(t *testing.T) {
	got := Sum256([]byte("abc"))
	want, _ := hex.DecodeString("508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982")
	if !bytes.Equal(got[:], want) {
		t.Fatalf("got %x", got)
	}
}

// TestMatchesXCrypto compares every form (unkeyed, keyed 256 and 128,
// written in pieces, summed twice, reset, as HMAC) with x/crypto's on
// random input, around the block boundaries.
func TestMatchesXCrypto(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	for _, n := range []int{0, 1, 31, 63, 64, 65, 127, 128, 129, 200, 1000} {
		for _, klen := range []int{0, 1, 16, 32} {
			msg := make([]byte, n)
			r.Read(msg)
			key := make([]byte, klen)
			r.Read(key)
			for _, size := range []int{Size, Size128} {
				if size == Size128 && klen == 0 {
					continue
				}
				var a, b hash.Hash
				if size == Size {
					a, _ = New256(key)
					b, _ = xblake2s.New256(key)
				} else {
					a, _ = New128(key)
					b, _ = xblake2s.New128(key)
				}
				for i := 0; i < len(msg); {
					m := min(len(msg)-i, r.Intn(70))
					a.Write(msg[i : i+m])
					i += m
				}
				b.Write(msg)
				want := b.Sum(nil)
				if got := a.Sum(nil); !bytes.Equal(got, want) {
					t.Fatalf("n %d key %d size %d: got %x, x/crypto %x", n, klen, size, got, want)
				}
				if got := a.Sum(nil); !bytes.Equal(got, want) {
					t.Fatalf("n %d key %d size %d: second Sum differs", n, klen, size)
				}
				a.Reset()
				a.Write(msg)
				if got := a.Sum(nil); !bytes.Equal(got, want) {
					t.Fatalf("n %d key %d size %d: after Reset: %x", n, klen, size, got)
				}
			}
			if klen == 0 {
				if got, want := Sum256(msg), xblake2s.Sum256(msg); got != want {
					t.Fatalf("Sum256 of %d bytes: %x, x/crypto %x", n, got, want)
				}
			}
			mac := hmac.New(func() hash.Hash { h, _ := New256(nil); return h }, key)
			xmac := hmac.New(func() hash.Hash { h, _ := xblake2s.New256(nil); return h }, key)
			mac.Write(msg)
			xmac.Write(msg)
			if !bytes.Equal(mac.Sum(nil), xmac.Sum(nil)) {
				t.Fatalf("HMAC of %d bytes with a %d-byte key differs", n, klen)
			}
		}
	}
	if _, err := New256(make([]byte, 33)); err == nil {
		t.Fatal("New256 took a 33-byte key")
	}
	if _, err := New128(nil); err == nil {
		t.Fatal("New128 took no key")
	}
}

// BenchmarkMAC1 hashes what a mac1 covers (a 116-byte initiation) with a
// 32-byte key, here and with x/crypto's assembly.
func BenchmarkMAC1(b *testing.B) {
	key, msg := make([]byte, 32), make([]byte, 116)
	b.Run("microlink", func(b *testing.B) {
		for b.Loop() {
			h, _ := New128(key)
			h.Write(msg)
			h.Sum(msg[:0:0])
		}
	})
	b.Run("x-crypto", func(b *testing.B) {
		for b.Loop() {
			h, _ := xblake2s.New128(key)
			h.Write(msg)
			h.Sum(msg[:0:0])
		}
	})
}
