package packet

import (
	"bytes"
	"net/netip"
	"testing"
)

func TestBuildUDPGolden(t *testing.T) {
	tests := []struct {
		name     string
		src, dst netip.AddrPort
		want     string
	}{
		{"v4", netip.AddrPortFrom(a4, 41641), netip.AddrPortFrom(b4, 53), goldUDP4},
		{"v6", netip.AddrPortFrom(a6, 41641), netip.AddrPortFrom(b6, 53), goldUDP6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := make([]byte, 100)
			n, err := BuildUDP(b, tt.src, tt.dst, []byte("hello"))
			if err != nil {
				t.Fatal(err)
			}
			if want := unhex(t, tt.want); !bytes.Equal(b[:n], want) {
				t.Fatalf("got  %x\nwant %x", b[:n], want)
			}
			// Payload already in place.
			c := make([]byte, 100)
			off := IPHeaderLen(tt.src.Addr()) + UDPHeaderLen
			copy(c[off:], "hello")
			m, err := BuildUDP(c, tt.src, tt.dst, c[off:off+5])
			if err != nil || !bytes.Equal(c[:m], b[:n]) {
				t.Fatalf("in place: %v %x", err, c[:m])
			}
			// Round trip.
			p := mustDecode(t, b[:n])
			if p.SrcAddrPort() != tt.src || p.DstAddrPort() != tt.dst || string(p.Payload()) != "hello" || !p.ChecksumsValid() {
				t.Errorf("round trip: %v %q", p, p.Payload())
			}
		})
	}
}

func TestBuildUDPChecksumIndependent(t *testing.T) {
	// The UDP checksum, checked against the naive RFC 1071 sum over a
	// pseudo header assembled by hand, for payload lengths odd and even.
	for n := range 40 {
		payload := bytes.Repeat([]byte{0xa5, 0x5a, 0xff}, n)[:n]
		for _, pair := range [][2]netip.Addr{{a4, b4}, {a6, b6}} {
			src, dst := netip.AddrPortFrom(pair[0], 1000), netip.AddrPortFrom(pair[1], 2000)
			b := make([]byte, 200)
			m, err := BuildUDP(b, src, dst, payload)
			if err != nil {
				t.Fatal(err)
			}
			hl := IPHeaderLen(pair[0])
			u := b[hl:m]
			var ph []byte
			ph = append(ph, pair[0].AsSlice()...)
			ph = append(ph, pair[1].AsSlice()...)
			if pair[0].Is4() {
				ph = append(ph, 0, 17, 0, byte(len(u)))
				if naiveChecksum(b[:20]) != 0 {
					t.Fatalf("IPv4 header checksum wrong: %x", b[:20])
				}
			} else {
				ph = append(ph, 0, 0, 0, byte(len(u)), 0, 0, 0, 17)
			}
			if c := naiveChecksum(append(ph, u...)); c != 0 {
				t.Fatalf("%v len %d: checksum does not verify (%#x)", pair[0], n, c)
			}
		}
	}
}

func TestBuildErrors(t *testing.T) {
	big := make([]byte, 70000)
	small := make([]byte, 28)
	pay := []byte("hello")
	ap := func(a netip.Addr) netip.AddrPort { return netip.AddrPortFrom(a, 1) }
	if _, err := BuildUDP(small, ap(a4), ap(b4), nil); err != nil {
		t.Errorf("exact-size buffer: %v", err)
	}
	if _, err := BuildUDP(small, ap(a4), ap(b4), pay); err == nil {
		t.Error("small buffer accepted")
	}
	if _, err := BuildUDP(big, ap(a4), ap(b6), pay); err == nil {
		t.Error("mixed families accepted")
	}
	if _, err := BuildUDP(big, netip.AddrPort{}, ap(b4), pay); err == nil {
		t.Error("invalid source accepted")
	}
	if _, err := BuildUDP(big, ap(a4), ap(b4), big[:65535-28+1]); err == nil {
		t.Error("oversized IPv4 packet accepted")
	}
	if _, err := BuildUDP(big, ap(a4), ap(b4), big[:65535-28]); err != nil {
		t.Errorf("largest IPv4 packet: %v", err)
	}
	if _, err := BuildUDP(big, ap(a6), ap(b6), big[:65535-8]); err != nil {
		t.Errorf("largest IPv6 packet: %v", err)
	}
	if _, err := BuildUDP(big, ap(a6), ap(b6), big[:65535-8+1]); err == nil {
		t.Error("oversized IPv6 packet accepted")
	}
	if _, err := BuildTSMPPing(small[:20], a4, b4, [8]byte{}); err == nil {
		t.Error("TSMP ping into small buffer accepted")
	}
	if err := PutIPv4Header(big, ProtoUDP, a6, b6, 0, 0); err == nil {
		t.Error("IPv4 header with IPv6 addresses accepted")
	}
	if err := PutIPv6Header(big, ProtoUDP, a4, b4, 0, 0); err == nil {
		t.Error("IPv6 header with IPv4 addresses accepted")
	}
}

func TestEchoReplyGolden(t *testing.T) {
	for _, tc := range []struct{ name, req, rep string }{
		{"v4", goldReq4, goldRep4},
		{"v6", goldReq6, goldRep6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, want := unhex(t, tc.req), unhex(t, tc.rep)
			dst := make([]byte, 200)
			n, err := EchoReply(dst, req)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(dst[:n], want) {
				t.Fatalf("got  %x\nwant %x", dst[:n], want)
			}
			// In place.
			n, err = EchoReply(req, req)
			if err != nil || !bytes.Equal(req[:n], want) {
				t.Fatalf("in place: %v %x", err, req[:n])
			}
			// A reply is not a request.
			if _, err := EchoReply(dst, want); err == nil {
				t.Error("reply to a reply")
			}
		})
	}
}

func TestEchoReplyDropsOptionsAndExtensions(t *testing.T) {
	// Request with IPv4 options: the reply has a plain header.
	r := unhex(t, goldReq4)
	o := append(append(append([]byte{}, r[:20]...), 1, 1, 1, 0), r[20:]...)
	o[0] = 0x46
	o[3] += 4
	o[10], o[11] = 0, 0
	c := naiveChecksum(o[:24])
	o[10], o[11] = byte(c>>8), byte(c)
	dst := make([]byte, 200)
	n, err := EchoReply(dst, o)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dst[:n], unhex(t, goldRep4)) {
		t.Errorf("got %x", dst[:n])
	}
	n, err = EchoReply(o, o) // in place, the message moves left
	if err != nil || !bytes.Equal(o[:n], unhex(t, goldRep4)) {
		t.Errorf("in place: %v %x", err, o[:n])
	}

	// IPv6 request with a hop-by-hop header.
	six := ipv6Ext(t, unhex(t, goldReq6), ext{ipv6HopByHop, []byte{0, 1, 4, 0, 0, 0, 0}})
	n, err = EchoReply(dst, six)
	if err != nil || !bytes.Equal(dst[:n], unhex(t, goldRep6)) {
		t.Errorf("v6 with hop-by-hop: %v %x", err, dst[:n])
	}
}

func TestEchoReplyErrors(t *testing.T) {
	dst := make([]byte, 200)
	bad := unhex(t, goldReq4)
	bad[len(bad)-1] ^= 1
	if _, err := EchoReply(dst, bad); err == nil {
		t.Error("bad ICMP checksum accepted")
	}
	code := unhex(t, goldReq4)
	code[21] = 1
	if _, err := EchoReply(dst, code); err == nil {
		t.Error("echo request with code 1 accepted")
	}
	for _, s := range []string{goldUDP4, goldPing6} {
		if _, err := EchoReply(dst, unhex(t, s)); err == nil {
			t.Errorf("reply to non-ICMP %s", s[:8])
		}
	}
	if _, err := EchoReply(dst[:30], unhex(t, goldReq4)); err == nil {
		t.Error("small dst accepted")
	}
	if _, err := EchoReply(dst, nil); err == nil {
		t.Error("empty request accepted")
	}
}

func TestEchoRequestRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		src, dst netip.Addr
		want     string
	}{{a4, b4, goldReq4}, {a6, b6, goldReq6}} {
		b := make([]byte, 200)
		id, seq := uint16(0x1234), uint16(7)
		if tc.src.Is6() {
			id, seq = 0x4321, 9
		}
		n, err := BuildEchoRequest(b, tc.src, tc.dst, id, seq, []byte(goldData))
		if err != nil {
			t.Fatal(err)
		}
		want := unhex(t, tc.want)
		// The golden request has an identification / flow label that
		// BuildEchoRequest leaves zero; compare the rest.
		got := b[:n]
		if tc.src.Is4() {
			if !bytes.Equal(got[20:], want[20:]) || !bytes.Equal(got[12:20], want[12:20]) || naiveChecksum(got[:20]) != 0 {
				t.Errorf("v4 got %x", got)
			}
		} else if !bytes.Equal(got[4:], want[4:]) {
			t.Errorf("v6 got %x", got)
		}
		p := mustDecode(t, got)
		if !p.IsEchoRequest() || p.ICMPID != id || p.ICMPSeq != seq || string(p.Payload()) != goldData || !p.ChecksumsValid() {
			t.Errorf("round trip %v", p)
		}
	}
}
