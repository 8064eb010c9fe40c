package chachapoly

import (
	"bytes"
	"encoding/hex"
	"math/rand"
	"testing"

	"golang.org/x/crypto/chacha20"
	"golang.org/x/crypto/chacha20poly1305"
)

func unhex(t *testing.T, s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRFC8439 is the AEAD test vector of RFC 8439, 2.8.2.
func TestRFC8439(t *testing.T) {
	key := unhex(t, "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f")
	nonce := unhex(t, "070000004041424344454647")
	ad := unhex(t, "50515253c0c1c2c3c4c5c6c7")
	pt := []byte("Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.")
	want := unhex(t, "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d63dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b3692ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc3ff4def08e4b7a9de576d26586cec64b6116"+
		"1ae10b594f09e26a7e902ecbd0600691")
	a, err := New(key)
	if err != nil {
		t.Fatal(err)
	}
	if got := a.Seal(nil, nonce, pt, ad); !bytes.Equal(got, want) {
		t.Fatalf("Seal:\n got %x\nwant %x", got, want)
	}
	if got, err := a.Open(nil, nonce, want, ad); err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("Open: %v", err)
	}
	bad := bytes.Clone(want)
	bad[0] ^= 1
	if _, err := a.Open(nil, nonce, bad, ad); err == nil {
		t.Fatal("Open accepted a forged ciphertext")
	}
	if _, err := New(key[:31]); err == nil {
		t.Fatal("New accepted a 31-byte key")
	}
}

// TestHChaCha20 is the HChaCha20 test vector of draft-irtf-cfrg-xchacha,
// 2.2.1, and a comparison with x/crypto's on random inputs.
func TestHChaCha20(t *testing.T) {
	var key [32]byte
	for i := range key {
		key[i] = byte(i)
	}
	var nonce [16]byte
	copy(nonce[:], unhex(t, "000000090000004a0000000031415927"))
	var out [32]byte
	hChaCha20(&out, &key, &nonce)
	if want := unhex(t, "82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc"); !bytes.Equal(out[:], want) {
		t.Fatalf("got %x\nwant %x", out, want)
	}
	r := rand.New(rand.NewSource(1))
	for i := 0; i < 100; i++ {
		r.Read(key[:])
		r.Read(nonce[:])
		hChaCha20(&out, &key, &nonce)
		want, _ := chacha20.HChaCha20(key[:], nonce[:])
		if !bytes.Equal(out[:], want) {
			t.Fatalf("key %x nonce %x: got %x, x/crypto %x", key, nonce, out, want)
		}
	}
}

// TestMatchesXCrypto compares both AEADs with x/crypto's on random keys,
// nonces, lengths and additional data.
func TestMatchesXCrypto(t *testing.T) {
	r := rand.New(rand.NewSource(2))
	key := make([]byte, KeySize)
	for i := 0; i < 300; i++ {
		r.Read(key)
		pt := make([]byte, r.Intn(1500))
		r.Read(pt)
		ad := make([]byte, r.Intn(40))
		r.Read(ad)
		for _, x := range []bool{false, true} {
			a, _ := New(key)
			b, _ := chacha20poly1305.New(key)
			if x {
				a, _ = NewX(key)
				b, _ = chacha20poly1305.NewX(key)
			}
			if a.NonceSize() != b.NonceSize() || a.Overhead() != b.Overhead() {
				t.Fatalf("x %v: sizes %d/%d, x/crypto %d/%d", x, a.NonceSize(), a.Overhead(), b.NonceSize(), b.Overhead())
			}
			nonce := make([]byte, a.NonceSize())
			r.Read(nonce)
			ct := a.Seal(nil, nonce, pt, ad)
			if want := b.Seal(nil, nonce, pt, ad); !bytes.Equal(ct, want) {
				t.Fatalf("x %v, %d bytes: Seal differs from x/crypto", x, len(pt))
			}
			got, err := a.Open(ct[:0], nonce, ct, ad) // in place
			if err != nil || !bytes.Equal(got, pt) {
				t.Fatalf("x %v, %d bytes: Open: %v", x, len(pt), err)
			}
			ct = b.Seal(nil, nonce, pt, ad)
			ct[r.Intn(len(ct))] ^= 1 << r.Intn(8)
			if _, err := a.Open(nil, nonce, ct, ad); err == nil {
				t.Fatalf("x %v: Open accepted a flipped bit", x)
			}
		}
	}
	if _, err := NewX(key[:16]); err == nil {
		t.Fatal("NewX accepted a 16-byte key")
	}
}

// TestSealAllocs: sealing and opening into a buffer with room do not
// allocate, as the data plane needs.
func TestSealAllocs(t *testing.T) {
	a, _ := New(make([]byte, KeySize))
	nonce := make([]byte, NonceSize)
	buf := make([]byte, 1400, 1400+Overhead)
	allocs := testing.AllocsPerRun(100, func() {
		ct := a.Seal(buf[:0], nonce, buf, nil)
		if _, err := a.Open(ct[:0], nonce, ct, nil); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations", allocs)
	}
}
