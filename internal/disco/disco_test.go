package disco

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/microlink-go/microlink/internal/key"
)

// testKey returns a key with bytes 1, 2, 30 and 31 set to their index.
func testKey(extra ...int) key.Public {
	var k key.Public
	k[1], k[2], k[30], k[31] = 1, 2, 30, 31
	for _, i := range extra {
		k[i] = byte(i)
	}
	return k
}

func unhex(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

var txid = [12]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}

const keyHex = "00 01 02 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 1e 1f"

var relayEndpoint = UDPRelayEndpoint{
	ServerDisco:         key.DiscoPublic(testKey()),
	ClientDisco:         [2]key.DiscoPublic{key.DiscoPublic(testKey(3)), key.DiscoPublic(testKey(4))},
	LamportID:           123,
	VNI:                 456,
	BindLifetime:        1e9,
	SteadyStateLifetime: 60e9,
	AddrPorts:           []netip.AddrPort{netip.MustParseAddrPort("1.2.3.4:567"), netip.MustParseAddrPort("[2001::3456]:789")},
}

const relayEndpointHex = keyHex +
	" 00 01 02 03 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 1e 1f" +
	" 00 01 02 00 04 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 1e 1f" +
	" 00 00 00 00 00 00 00 7b 00 00 01 c8 00 00 00 00 3b 9a ca 00 00 00 00 0d f8 47 58 00" +
	" 00 00 00 00 00 00 00 00 00 00 ff ff 01 02 03 04 02 37" +
	" 20 01 00 00 00 00 00 00 00 00 00 00 00 00 34 56 03 15"

var bindCommon = BindUDPRelayEndpointCommon{
	VNI: 1, Generation: 2, RemoteKey: key.DiscoPublic(testKey()),
	Challenge: [32]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31},
}

const bindCommonHex = "00 00 00 01 00 00 00 02 " + keyHex +
	" 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10 11 12 13 14 15 16 17 18 19 1a 1b 1c 1d 1e 1f"

// The expected encodings are those the Tailscale client produces for the
// same messages.
var golden = []struct {
	name string
	m    Message
	hex  string
}{
	{"ping", &Ping{TxID: txid}, "01 00 01 02 03 04 05 06 07 08 09 0a 0b 0c"},
	{"ping-nodekey", &Ping{TxID: txid, NodeKey: key.NodePublic(testKey())}, "01 00 01 02 03 04 05 06 07 08 09 0a 0b 0c " + keyHex},
	{"ping-padding", &Ping{TxID: txid, Padding: 3}, "01 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 00 00 00"},
	{"ping-nodekey-padding", &Ping{TxID: txid, NodeKey: key.NodePublic(testKey()), Padding: 3}, "01 00 01 02 03 04 05 06 07 08 09 0a 0b 0c " + keyHex + " 00 00 00"},
	{"pong", &Pong{TxID: txid, Src: netip.MustParseAddrPort("2.3.4.5:1234")}, "02 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 00 00 00 00 00 00 00 00 00 00 ff ff 02 03 04 05 04 d2"},
	{"pong-v6", &Pong{TxID: txid, Src: netip.MustParseAddrPort("[fed0::12]:6666")}, "02 00 01 02 03 04 05 06 07 08 09 0a 0b 0c fe d0 00 00 00 00 00 00 00 00 00 00 00 00 00 12 1a 0a"},
	{"call-me-maybe-empty", &CallMeMaybe{}, "03 00"},
	{"call-me-maybe", &CallMeMaybe{MyNumber: relayEndpoint.AddrPorts}, "03 00 00 00 00 00 00 00 00 00 00 00 ff ff 01 02 03 04 02 37 20 01 00 00 00 00 00 00 00 00 00 00 00 00 34 56 03 15"},
	{"bind", &BindUDPRelayEndpoint{bindCommon}, "04 00 " + bindCommonHex},
	{"bind-challenge", &BindUDPRelayEndpointChallenge{bindCommon}, "05 00 " + bindCommonHex},
	{"bind-answer", &BindUDPRelayEndpointAnswer{bindCommon}, "06 00 " + bindCommonHex},
	{"call-me-maybe-via", &CallMeMaybeVia{relayEndpoint}, "07 00 " + relayEndpointHex},
	{"allocate-request", &AllocateUDPRelayEndpointRequest{ClientDisco: relayEndpoint.ClientDisco, Generation: 1},
		"08 00 00 01 02 03 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 1e 1f 00 01 02 00 04 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 1e 1f 00 00 00 01"},
	{"allocate-response", &AllocateUDPRelayEndpointResponse{Generation: 1, UDPRelayEndpoint: relayEndpoint}, "09 00 00 00 00 01 " + relayEndpointHex},
}

func TestGolden(t *testing.T) {
	for _, tc := range golden {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.m.AppendMarshal([]byte("foo"))
			if !bytes.HasPrefix(got, []byte("foo")) {
				t.Fatalf("prefix overwritten: %q", got)
			}
			got = got[3:]
			if h := fmt.Sprintf("% x", got); h != tc.hex {
				t.Fatalf("marshal\n got %s\nwant %s", h, tc.hex)
			}
			back, err := Parse(got)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(back, tc.m) {
				t.Fatalf("parse = %+v, want %+v", back, tc.m)
			}
			// Trailing bytes are ignored, except by the relay messages whose
			// address list runs to the end of the payload.
			if _, err := Parse(append(got, 0xee)); err != nil && got[0] != byte(TypeCallMeMaybeVia) && got[0] != byte(TypeAllocateUDPRelayEndpointResponse) {
				t.Fatalf("trailing byte: %v", err)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		hex  string
	}{
		{"empty", ""},
		{"one byte", "01"},
		{"short ping", "01 00 01 02 03"},
		{"short pong", "02 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 00 00"},
		{"unknown", "0a 00"},
		{"zero type", "00 00 00"},
		{"short bind", "04 00 00 00 00 01"},
		{"via without address", "07 00 " + relayEndpointHex[:len(relayEndpointHex)-2*18*3]},
		{"short allocate request", "08 00 00 01"},
		{"short allocate response", "09 00 00 00"},
	} {
		if m, err := Parse(unhex(tc.hex)); err == nil {
			t.Errorf("%s: parsed as %+v", tc.name, m)
		}
	}
}

func TestParseLenient(t *testing.T) {
	// A ping with a partial node key keeps the bytes as padding.
	m, err := Parse(unhex("01 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 01 02 03"))
	if err != nil {
		t.Fatal(err)
	}
	if p := m.(*Ping); !p.NodeKey.IsZero() || p.Padding != 3 {
		t.Fatalf("ping = %+v", p)
	}
	// A zero node key is absent, so its bytes count as padding and the
	// ping re-encodes to its own size.
	zeroKey := append(unhex("01 00 01 02 03 04 05 06 07 08 09 0a 0b 0c"), make([]byte, key.Len+5)...)
	m, err = Parse(zeroKey)
	if err != nil {
		t.Fatal(err)
	}
	if p := m.(*Ping); !p.NodeKey.IsZero() || p.Padding != key.Len+5 {
		t.Fatalf("ping with a zero key = %+v", p)
	}
	if b := m.AppendMarshal(nil); !bytes.Equal(b, zeroKey) {
		t.Fatalf("re-encoded as % x", b)
	}
	// Call-me-maybe with a ragged length or a future version carries nothing.
	for _, h := range []string{"03 00 01 02 03", "03 01 00 00 00 00 00 00 00 00 00 00 ff ff 01 02 03 04 02 37"} {
		m, err := Parse(unhex(h))
		if err != nil {
			t.Fatal(err)
		}
		if c := m.(*CallMeMaybe); len(c.MyNumber) != 0 {
			t.Fatalf("%s: %+v", h, c)
		}
	}
}

func TestLooksLikeDisco(t *testing.T) {
	pkt := append([]byte(Magic), make([]byte, KeyLen+NonceLen)...)
	if !LooksLikeDisco(pkt) {
		t.Fatal("62-byte packet rejected")
	}
	if LooksLikeDisco(pkt[:HeaderLen-1]) {
		t.Fatal("61-byte packet accepted")
	}
	pkt[5] ^= 1
	if LooksLikeDisco(pkt) {
		t.Fatal("bad magic accepted")
	}
	if got := fmt.Sprintf("% x", Magic); got != "54 53 f0 9f 92 ac" {
		t.Fatalf("magic = %s", got)
	}
}
