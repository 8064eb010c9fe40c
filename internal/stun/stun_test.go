package stun

import (
	"bytes"
	"encoding/hex"
	"errors"
	stdcrc32 "hash/crc32"
	"math/rand"
	"net/netip"
	"testing"
)

func unhex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

var tx123 = TxID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}

// The Tailscale client sends these exact bytes for tx123; its STUN server
// answers with the response vectors below.
const (
	requestHex    = "000100142112a4420102030405060708090a0b0c802200087461696c6e6f646580280004b32c370f"
	responseV4Hex = "0101000c2112a4420102030405060708090a0b0c00200008000183bbe112a645"
	responseV6Hex = "010100182112a4420102030405060708090a0b0c0020001400022c840113a9fa0102030405060708090a0b05"
)

func TestRequestGolden(t *testing.T) {
	got := Request([]byte("x"), tx123)
	if got[0] != 'x' {
		t.Fatal("prefix overwritten")
	}
	if h := hex.EncodeToString(got[1:]); h != requestHex {
		t.Fatalf("request\n got %s\nwant %s", h, requestHex)
	}
	if len(got[1:]) != RequestLen || RequestLen != 40 {
		t.Fatalf("len = %d, RequestLen = %d", len(got)-1, RequestLen)
	}
	tx, err := ParseBindingRequest(got[1:])
	if err != nil || tx != tx123 {
		t.Fatalf("ParseBindingRequest = %x, %v", tx, err)
	}
}

func TestResponseGolden(t *testing.T) {
	for _, tc := range []struct {
		hex string
		ap  netip.AddrPort
	}{
		{responseV4Hex, netip.MustParseAddrPort("192.0.2.7:41641")},
		{responseV6Hex, netip.MustParseAddrPort("[2001:db8::9]:3478")},
	} {
		if h := hex.EncodeToString(Response(nil, tx123, tc.ap)); h != tc.hex {
			t.Errorf("Response(%v)\n got %s\nwant %s", tc.ap, h, tc.hex)
		}
		tx, ap, err := ParseResponse(unhex(tc.hex))
		if err != nil || tx != tx123 || ap != tc.ap {
			t.Errorf("ParseResponse = %x %v %v, want %v", tx, ap, err, tc.ap)
		}
	}
}

// Responses captured from public STUN servers and other implementations.
var responseTests = []struct {
	name string
	hex  string
	tx   string
	want string
}{
	{"google-1", "0101000c2112a4422360b11e3ec68ffa93e08007002000080001c7866957856f", "2360b11e3ec68ffa93e08007", "72.69.33.45:59028"},
	{"google-2", "0101000c2112a442f9f121cbde7d7c75923ce271002000080001c7876957856f", "f9f121cbde7d7c75923ce271", "72.69.33.45:59029"},
	{"sipgate-alt-xor", "010100442112a442482eb64715e8b28eaead6444000100080001e4ab4845212d0004000800012710d90a44980005000800012711d9747a8a802000080001c5b96957856f80220010566f766964612e6f726720302e393600", "482eb64715e8b28eaead6444", "72.69.33.45:58539"},
	{"powervoip-mapped-only", "010100242112a4427e57966829f444609d1deaa6000100080001e9d34845212d0004000800010d964d48a9d40005000800010d974d48a9d5", "7e57966829f444609d1deaa6", "72.69.33.45:59859"},
	{"pion-trailing-bytes", "010100242112a442ebc2d36ef471217c4f3e308e8022000a656e64706f696e7465720000002000080001ce665e12a44380280004b699bb02010100242112a442", "ebc2d36ef471217c4f3e308e", "127.0.0.1:61300"},
	{"stuntman-ipv6", "010100482112a44206f56685d28af3e69ce341e200010014000290ce260200d1b4cfc10038b231fffeef96f6802b001400020d962604a880000200d10000000000c57001002000140002b1dc0710a493b23aa785ea38c219620cd714", "06f56685d28af3e69ce341e2", "[2602:d1:b4cf:c100:38b2:31ff:feef:96f6]:37070"},
	{"software-pad-1", "010100142112a442ebc2d36ef471217c4f3e308e8022000161000000002000080001ce665e12a443", "ebc2d36ef471217c4f3e308e", "127.0.0.1:61300"},
	{"software-pad-3", "010100142112a442ebc2d36ef471217c4f3e308e8022000361626300002000080001ce665e12a443", "ebc2d36ef471217c4f3e308e", "127.0.0.1:61300"},
	{"v4-mapped-in-v6", "010100182112a4424fd5d202dcb37d31fc773306002000140002cd3d2112a4424fd5d202dcb382ce2dc3fcc7", "4fd5d202dcb37d31fc773306", "209.180.207.193:60463"},
}

func TestParseResponseVectors(t *testing.T) {
	for _, tc := range responseTests {
		t.Run(tc.name, func(t *testing.T) {
			tx, ap, err := ParseResponse(unhex(tc.hex))
			if err != nil {
				t.Fatal(err)
			}
			if hex.EncodeToString(tx[:]) != tc.tx {
				t.Errorf("tx = %x, want %s", tx, tc.tx)
			}
			if ap != netip.MustParseAddrPort(tc.want) {
				t.Errorf("addr = %v, want %s", ap, tc.want)
			}
		})
	}
}

func TestParseResponseErrors(t *testing.T) {
	good := unhex(responseV4Hex)
	mod := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"short", good[:19], ErrNotSTUN},
		{"request", unhex(requestHex), ErrNotSuccessResponse},
		{"error class", mod(func(b []byte) []byte { b[0], b[1] = 0x01, 0x11; return b }), ErrNotSuccessResponse},
		{"length past end", mod(func(b []byte) []byte { b[3] = 0x40; return b }), ErrMalformedAttrs},
		{"attr past end", mod(func(b []byte) []byte { b[23] = 0x20; return b }), ErrMalformedAttrs},
		{"bad family", mod(func(b []byte) []byte { b[25] = 3; return b }), ErrMalformedAttrs},
		{"no attributes", mod(func(b []byte) []byte { b[3] = 0; return b }), ErrNoAddress},
	} {
		if _, _, err := ParseResponse(tc.b); !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestParseBindingRequestRejects(t *testing.T) {
	good := unhex(requestHex)
	mod := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"not stun", good[:10], ErrNotSTUN},
		{"response", unhex(responseV4Hex), ErrNotBindingRequest},
		{"other software", mod(func(b []byte) []byte { b[24] = 'T'; return b }), ErrWrongSoftware},
		{"bad fingerprint", mod(func(b []byte) []byte { b[39] ^= 1; return b }), ErrWrongFingerprint},
		{"no fingerprint", good[:32], ErrNoFingerprint},
		{"ragged", good[:34], ErrMalformedAttrs},
	} {
		if _, err := ParseBindingRequest(tc.b); !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestIs(t *testing.T) {
	const cookie = "\x21\x12\xa4\x42"
	zeros := string(make([]byte, 12))
	for _, tc := range []struct {
		in          string
		is, binding bool
	}{
		{"", false, false},
		{string(make([]byte, 20)), false, false},
		{"\x00\x00\x00\x00" + cookie + zeros[:11], false, false},
		{"\x00\x00\x00\x00" + cookie + zeros, true, false},
		{"\x00\x01\x00\x00" + cookie + zeros + "foo", true, true},
		{"\x01\x01\x00\x00" + cookie + zeros, true, true},
		{"\xf0\x01\x00\x00" + cookie + zeros, false, false},
		{"\x40\x01\x00\x00" + cookie + zeros, false, false},
		{"\x20\x00\x00\x00" + cookie + zeros, true, false},
	} {
		if got := Is([]byte(tc.in)); got != tc.is {
			t.Errorf("Is(%x) = %v", tc.in, got)
		}
		if got := IsBinding([]byte(tc.in)); got != tc.binding {
			t.Errorf("IsBinding(%x) = %v", tc.in, got)
		}
	}
}

func TestResponseRoundTrip(t *testing.T) {
	for _, s := range []string{"1.2.3.4:254", "1.2.3.4:257", "[1::4]:254", "[1::4]:257", "[::ffff:1.2.3.4]:9"} {
		ap := netip.MustParseAddrPort(s)
		tx := NewTxID()
		gotTx, got, err := ParseResponse(Response(nil, tx, ap))
		want := netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		if err != nil || gotTx != tx || got != want {
			t.Errorf("%s: %v %v %v", s, gotTx == tx, got, err)
		}
	}
}

func TestRequestAllocs(t *testing.T) {
	buf := make([]byte, 0, RequestLen)
	tx := NewTxID()
	if n := testing.AllocsPerRun(100, func() { buf = Request(buf[:0], tx) }); n > 0 {
		t.Fatalf("Request allocates %v times", n)
	}
}

func FuzzParseResponse(f *testing.F) {
	for _, tc := range responseTests {
		f.Add(unhex(tc.hex))
	}
	f.Add(unhex(responseV6Hex))
	f.Add(unhex(requestHex))
	f.Fuzz(func(t *testing.T, b []byte) {
		tx, ap, err := ParseResponse(b)
		if err != nil {
			return
		}
		if !ap.IsValid() {
			t.Fatal("valid response without address")
		}
		// Re-encoding what was parsed parses back to the same address.
		_, ap2, err := ParseResponse(Response(nil, tx, ap))
		if err != nil || ap2 != ap {
			t.Fatalf("round trip %v -> %v %v", ap, ap2, err)
		}
	})
}

func FuzzParseBindingRequest(f *testing.F) {
	f.Add(unhex(requestHex))
	f.Add(unhex(responseV4Hex))
	f.Fuzz(func(t *testing.T, b []byte) {
		tx, err := ParseBindingRequest(b)
		if err == nil && !bytes.Equal(tx[:], b[8:20]) {
			t.Fatal("wrong tx")
		}
	})
}

// TestCRC32 compares the FINGERPRINT checksum with hash/crc32's IEEE one.
func TestCRC32(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	for n := 0; n < 600; n += 1 + n/8 {
		b := make([]byte, n)
		r.Read(b)
		if got, want := crc32(b), stdcrc32.ChecksumIEEE(b); got != want {
			t.Fatalf("%d bytes: %08x, hash/crc32 %08x", n, got, want)
		}
	}
	if got := crc32([]byte("123456789")); got != 0xcbf43926 {
		t.Fatalf("check value %08x", got)
	}
}
