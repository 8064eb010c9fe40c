package packet

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"
)

func TestChecksumGolden(t *testing.T) {
	// An IPv4 header whose checksum field (0xb861) is correct.
	h := unhex(t, "4500 0073 0000 4000 4011 b861 c0a8 0001 c0a8 00c7")
	if c := Checksum(h); c != 0 {
		t.Errorf("checksum over header with its checksum = %#04x, want 0", c)
	}
	h[10], h[11] = 0, 0
	if c := Checksum(h); c != 0xb861 {
		t.Errorf("Checksum = %#04x, want 0xb861", c)
	}
}

func TestChecksumMatchesNaive(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := range 1600 {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		if n%7 == 0 {
			for i := range b {
				b[i] = 0xff
			}
		}
		if got, want := Checksum(b), naiveChecksum(b); got != want {
			t.Fatalf("len %d: Checksum = %#04x, naive = %#04x", n, got, want)
		}
	}
}

// TestTransportChecksumMatchesNaive: the pseudo header and the message
// summed in 64-bit words, with addresses whose words are near 2^64 (so
// that the sums carry), agree with a 16-bit sum of the same bytes.
func TestTransportChecksumMatchesNaive(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	addrs := []netip.Addr{
		netip.MustParseAddr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"),
		netip.MustParseAddr("fd7a:115c:a1e0::1"),
		netip.MustParseAddr("255.255.255.255"),
		netip.MustParseAddr("100.64.0.1"),
	}
	for i := range 2000 {
		src, dst := addrs[i%4], addrs[(i/4)%4]
		if src.Is4() != dst.Is4() {
			continue
		}
		b := make([]byte, r.IntN(1500))
		for j := range b {
			b[j] = byte(r.Uint32())
			if i%3 == 0 {
				b[j] = 0xff
			}
		}
		var ph []byte
		ph = append(ph, src.AsSlice()...)
		ph = append(ph, dst.AsSlice()...)
		ph = append(ph, 0, byte(ProtoTCP))
		ph = binary.BigEndian.AppendUint16(ph, uint16(len(b)))
		if len(ph)%2 != 0 {
			t.Fatal("odd pseudo header")
		}
		want := naiveChecksum(append(ph, b...))
		if got := TransportChecksum(src, dst, ProtoTCP, b); got != want {
			t.Fatalf("%v → %v, %d bytes: %#04x, naive %#04x", src, dst, len(b), got, want)
		}
	}
}
