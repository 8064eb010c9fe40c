package disco

import (
	"bytes"
	"encoding/hex"
	"net/netip"
	"reflect"
	"testing"

	"github.com/microlink-go/microlink/internal/key"
)

func rfcKeys() (alice, bob key.Private) {
	copy(alice[:], unhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"))
	copy(bob[:], unhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"))
	return alice, bob
}

// TestSealGolden pins a sealed packet; the Tailscale client opens and
// parses the same bytes as a Ping.
func TestSealGolden(t *testing.T) {
	alice, bob := rfcKeys()
	shared := SharedKey(alice, bob.DiscoPublic())
	var nonce [NonceLen]byte
	for i := range nonce {
		nonce[i] = byte(i)
	}
	ping := &Ping{TxID: txid, NodeKey: key.NodePublic(testKey())}
	pkt := sealWithNonce(nil, shared, alice.DiscoPublic(), &nonce, ping.AppendMarshal(nil))
	const want = "5453f09f92ac" +
		"8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a" +
		"000102030405060708090a0b0c0d0e0f1011121314151617" +
		goldenBox
	if got := hex.EncodeToString(pkt); got != want {
		t.Fatalf("sealed\n got %s\nwant %s", got, want)
	}
	if len(pkt) != Overhead+2+12+32 {
		t.Fatalf("len = %d", len(pkt))
	}
}

const goldenBox = "368abd88af4c9007120823ade8f1d803044e51a71872507b478f9174a886b8dfe3c2d9e075e7ac8d7ad3273a462aee1c0a02b77b89917230e88c66c405f4"

func TestSealOpenRoundTrip(t *testing.T) {
	alice, bob := rfcKeys()
	a, b := NewSealer(alice, 0), NewSealer(bob, 0)
	msgs := []Message{
		&Ping{TxID: txid, NodeKey: alice.NodePublic(), Padding: 40},
		&Pong{TxID: txid, Src: netip.MustParseAddrPort("[2001:db8::1]:41641")},
		&CallMeMaybe{MyNumber: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:1")}},
	}
	for _, m := range msgs {
		pkt := a.Seal([]byte("hdr"), b.Public(), m)
		if string(pkt[:3]) != "hdr" {
			t.Fatal("Seal did not append")
		}
		pkt = pkt[3:]
		if !LooksLikeDisco(pkt) {
			t.Fatal("sealed packet does not look like disco")
		}
		src, ok := Source(pkt)
		if !ok || src != a.Public() {
			t.Fatalf("source = %v %v", src, ok)
		}
		got, ok := b.Open(pkt, src)
		if !ok || !reflect.DeepEqual(got, m) {
			t.Fatalf("open = %+v %v, want %+v", got, ok, m)
		}
		// Tampering anywhere in nonce or box fails authentication.
		for _, i := range []int{MagicLen + KeyLen, HeaderLen, len(pkt) - 1} {
			bad := bytes.Clone(pkt)
			bad[i] ^= 0x80
			if _, ok := b.Open(bad, src); ok {
				t.Fatalf("tampered byte %d accepted", i)
			}
		}
		// A third party cannot open it.
		if _, ok := NewSealer(key.NewPrivate(), 0).Open(pkt, src); ok {
			t.Fatal("opened with the wrong key")
		}
	}
	if _, ok := Open(nil, a.Shared(b.Public()), []byte(Magic)); ok {
		t.Fatal("short packet opened")
	}
}

func TestSealerBounded(t *testing.T) {
	s := NewSealer(key.NewPrivate(), 4)
	peer := key.NewPrivate().DiscoPublic()
	k := s.Shared(peer)
	if s.Shared(peer) != k {
		t.Fatal("shared key not cached")
	}
	for range 10 {
		s.Shared(key.NewPrivate().DiscoPublic())
	}
	if n := len(s.shared); n > 4 {
		t.Fatalf("cache holds %d keys", n)
	}
	if *s.Shared(peer) != *k {
		t.Fatal("recomputed key differs")
	}
}

func TestSealAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool does not keep items under the race detector")
	}
	alice, bob := rfcKeys()
	s := NewSealer(alice, 0)
	peer := bob.DiscoPublic()
	buf := make([]byte, 0, 256)
	ping := &Ping{TxID: txid, NodeKey: alice.NodePublic()}
	n := testing.AllocsPerRun(100, func() { buf = s.Seal(buf[:0], peer, ping) })
	if n > 0 {
		t.Fatalf("Seal allocates %v times", n)
	}
}
