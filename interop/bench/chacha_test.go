package bench

import (
	"encoding/binary"
	"testing"

	"golang.org/x/crypto/chacha20poly1305"
)

// BenchmarkChaCha20Poly1305 is the floor under any WireGuard data plane:
// the AEAD alone on the same 1280-byte packets, sealed and opened in
// place with a counter nonce, as a transport message carries them.
func BenchmarkChaCha20Poly1305(b *testing.B) {
	var k [chacha20poly1305.KeySize]byte
	for i := range k {
		k[i] = byte(i)
	}
	aead, err := chacha20poly1305.New(k[:])
	if err != nil {
		b.Fatal(err)
	}
	pkt := udpPacket(addrA, addrB, packetSize)
	buf := make([]byte, packetSize+aead.Overhead())
	var nonce [chacha20poly1305.NonceSize]byte

	b.Run("seal", func(b *testing.B) {
		b.SetBytes(packetSize)
		b.ReportAllocs()
		defer countAllocs(b)()
		for i := range b.N {
			binary.LittleEndian.PutUint64(nonce[4:], uint64(i))
			copy(buf, pkt)
			aead.Seal(buf[:0], nonce[:], buf[:packetSize], nil)
		}
	})

	b.Run("open", func(b *testing.B) {
		sealed := aead.Seal(nil, nonce[:], pkt, nil)
		b.SetBytes(packetSize)
		b.ReportAllocs()
		defer countAllocs(b)()
		for range b.N {
			copy(buf, sealed)
			if _, err := aead.Open(buf[:0], nonce[:], buf, nil); err != nil {
				b.Fatal(err)
			}
		}
	})

	b.Run("e2e", func(b *testing.B) {
		b.SetBytes(packetSize)
		b.ReportAllocs()
		defer countAllocs(b)()
		for i := range b.N {
			binary.LittleEndian.PutUint64(nonce[4:], uint64(i))
			copy(buf, pkt)
			ct := aead.Seal(buf[:0], nonce[:], buf[:packetSize], nil)
			if _, err := aead.Open(ct[:0], nonce[:], ct, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}
