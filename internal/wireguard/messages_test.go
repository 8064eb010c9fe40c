package wireguard

import (
	"bytes"
	"net/netip"
	"testing"
)

func TestMessageRoundTrip(t *testing.T) {
	in := mustHex(t, goldenInitiation)
	m, err := parseInitiation(in)
	if err != nil {
		t.Fatal(err)
	}
	if m.sender != 0x01020304 {
		t.Errorf("sender %#x", m.sender)
	}
	var out [InitiationSize]byte
	m.marshal(&out)
	if !bytes.Equal(out[:], in) {
		t.Error("initiation round trip")
	}

	rin := mustHex(t, goldenResponse)
	r, err := parseResponse(rin)
	if err != nil {
		t.Fatal(err)
	}
	if r.sender != 0x0a0b0c0d || r.receiver != 0x01020304 {
		t.Errorf("response indices %#x %#x", r.sender, r.receiver)
	}
	var rout [ResponseSize]byte
	r.marshal(&rout)
	if !bytes.Equal(rout[:], rin) {
		t.Error("response round trip")
	}

	c := cookieReply{receiver: 7}
	c.nonce[0], c.cookie[31] = 1, 2
	var cb [CookieReplySize]byte
	c.marshal(&cb)
	if cb[0] != 3 || cb[4] != 7 || cb[8] != 1 || cb[63] != 2 {
		t.Errorf("cookie reply layout %x", cb)
	}

	tr := []byte{4, 0, 0, 0, 1, 2, 3, 4, 8, 7, 6, 5, 4, 3, 2, 1}
	tr = append(tr, make([]byte, 16)...)
	h, err := parseTransportHeader(tr)
	if err != nil || h.receiver != 0x04030201 || h.counter != 0x0102030405060708 {
		t.Errorf("transport header %+v %v", h, err)
	}
}

func TestMessageParseErrors(t *testing.T) {
	in := mustHex(t, goldenInitiation)
	for _, b := range [][]byte{nil, in[:147], append(in, 0)} {
		if _, err := parseInitiation(b); err == nil {
			t.Errorf("parseInitiation(%d bytes) succeeded", len(b))
		}
	}
	bad := bytes.Clone(in)
	bad[1] = 1 // reserved byte
	if _, err := parseInitiation(bad); err == nil {
		t.Error("reserved bytes not checked")
	}
	if _, err := parseResponse(in[:ResponseSize]); err == nil {
		t.Error("initiation bytes parsed as response")
	}
	if _, err := parseCookieReply(make([]byte, 64)); err == nil {
		t.Error("zero type parsed as cookie reply")
	}
	if _, err := parseTransportHeader([]byte{4, 0, 0, 0}); err == nil {
		t.Error("short transport accepted")
	}
}

func TestPaddedLen(t *testing.T) {
	for n, want := range map[int]int{0: 0, 1: 16, 16: 16, 17: 32, 1280: 1280, 1281: 1296} {
		if got := paddedLen(n); got != want {
			t.Errorf("paddedLen(%d) = %d, want %d", n, got, want)
		}
	}
}

func TestPacketAddrs(t *testing.T) {
	a, b := netip.MustParseAddr("100.64.0.1"), netip.MustParseAddr("100.64.0.2")
	p := ipv4Packet(a, b, 60, 0)
	padded := append(bytes.Clone(p), make([]byte, 4)...)
	src, dst, n, ok := packetAddrs(padded)
	if !ok || src != a || dst != b || n != 60 {
		t.Errorf("ipv4: %v %v %d %v", src, dst, n, ok)
	}
	p[3] = 61 // total length beyond the data
	if _, _, _, ok := packetAddrs(p); ok {
		t.Error("truncated ipv4 accepted")
	}
	s6, d6 := netip.MustParseAddr("fd7a::1"), netip.MustParseAddr("fd7a::2")
	src, dst, n, ok = packetAddrs(ipv6Packet(s6, d6, 48))
	if !ok || src != s6 || dst != d6 || n != 48 {
		t.Errorf("ipv6: %v %v %d %v", src, dst, n, ok)
	}
	for _, bad := range [][]byte{nil, {0x45}, {0x60, 0}, {0x10, 0, 0, 0}} {
		if _, _, _, ok := packetAddrs(bad); ok {
			t.Errorf("packetAddrs(%x) ok", bad)
		}
	}
}

func FuzzParseMessages(f *testing.F) {
	f.Add(mustHex(f, goldenInitiation))
	f.Add(mustHex(f, goldenResponse))
	f.Add(append([]byte{3, 0, 0, 0}, make([]byte, 60)...))
	f.Add(append([]byte{4, 0, 0, 0}, make([]byte, 40)...))
	f.Add(ipv4Packet(netip.MustParseAddr("1.2.3.4"), netip.MustParseAddr("5.6.7.8"), 40, 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		if m, err := parseInitiation(b); err == nil {
			var out [InitiationSize]byte
			m.marshal(&out)
			if !bytes.Equal(out[:], b) {
				t.Fatal("initiation round trip")
			}
		}
		if m, err := parseResponse(b); err == nil {
			var out [ResponseSize]byte
			m.marshal(&out)
			if !bytes.Equal(out[:], b) {
				t.Fatal("response round trip")
			}
		}
		if m, err := parseCookieReply(b); err == nil {
			var out [CookieReplySize]byte
			m.marshal(&out)
			if !bytes.Equal(out[:], b) {
				t.Fatal("cookie reply round trip")
			}
		}
		parseTransportHeader(b)
		if _, _, n, ok := packetAddrs(b); ok && (n > len(b) || n < 20) {
			t.Fatalf("packet length %d of %d bytes", n, len(b))
		}
		messageType(b)
	})
}
