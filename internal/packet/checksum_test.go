package packet

import (
	"math/rand/v2"
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
	for n := range 300 {
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
