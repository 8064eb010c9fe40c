package packet

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

func TestDecodeGolden(t *testing.T) {
	tests := []struct {
		name    string
		pkt     string
		version uint8
		proto   Proto
		src     netip.Addr
		dst     netip.Addr
		sport   uint16
		dport   uint16
		hdr     int
		payload string
	}{
		{"icmp4", goldReq4, 4, ProtoICMPv4, a4, b4, 0, 0, 20, goldData},
		{"icmp6", goldReq6, 6, ProtoICMPv6, a6, b6, 0, 0, 40, goldData},
		{"udp4", goldUDP4, 4, ProtoUDP, a4, b4, 41641, 53, 20, "hello"},
		{"udp6", goldUDP6, 6, ProtoUDP, a6, b6, 41641, 53, 40, "hello"},
		{"tsmp4", goldPing4, 4, ProtoTSMP, a4, b4, 0, 0, 20, "p\x01\x02\x03\x04\x05\x06\x07\x08"},
		{"tsmp6", goldPing6, 6, ProtoTSMP, a6, b6, 0, 0, 40, "p\x01\x02\x03\x04\x05\x06\x07\x08"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := unhex(t, tt.pkt)
			// Trailing bytes past the IP length are ignored.
			p := mustDecode(t, append(b, 0xee, 0xee))
			if p.Version != tt.version || p.Proto != tt.proto || p.Src != tt.src || p.Dst != tt.dst ||
				p.SrcPort != tt.sport || p.DstPort != tt.dport || p.HeaderLen != tt.hdr {
				t.Errorf("got v%d %v %v:%d > %v:%d hdr %d", p.Version, p.Proto, p.Src, p.SrcPort, p.Dst, p.DstPort, p.HeaderLen)
			}
			if string(p.Payload()) != tt.payload {
				t.Errorf("payload %q, want %q", p.Payload(), tt.payload)
			}
			if len(p.Buffer()) != len(b) {
				t.Errorf("buffer length %d, want %d", len(p.Buffer()), len(b))
			}
			if p.TTL != 64 || p.Fragment {
				t.Errorf("TTL %d fragment %v", p.TTL, p.Fragment)
			}
			if !p.ChecksumsValid() {
				t.Error("checksums reported invalid")
			}
		})
	}
}

func TestDecodeICMPFields(t *testing.T) {
	p := mustDecode(t, unhex(t, goldReq4))
	if p.ICMPType != 8 || p.ICMPCode != 0 || p.ICMPID != 0x1234 || p.ICMPSeq != 7 {
		t.Errorf("icmp fields %d/%d id %#x seq %d", p.ICMPType, p.ICMPCode, p.ICMPID, p.ICMPSeq)
	}
	if !p.IsEchoRequest() || p.IsEchoReply() || p.IsICMPError() {
		t.Error("request classified wrongly")
	}
	r := mustDecode(t, unhex(t, goldRep6))
	if !r.IsEchoReply() || r.IsEchoRequest() || r.ICMPID != 0x4321 || r.ICMPSeq != 9 {
		t.Errorf("v6 reply: type %d id %#x seq %d", r.ICMPType, r.ICMPID, r.ICMPSeq)
	}
}

// tcp4 returns an IPv4 TCP segment with the given flags.
func tcp4(t *testing.T, src, dst netip.Addr, sport, dport uint16, flags TCPFlags) []byte {
	b := make([]byte, 20+TCPHeaderLen+3)
	if err := PutIPv4Header(b, ProtoTCP, src, dst, 1, TCPHeaderLen+3); err != nil {
		t.Fatal(err)
	}
	h := b[20:]
	binary.BigEndian.PutUint16(h[0:2], sport)
	binary.BigEndian.PutUint16(h[2:4], dport)
	h[12] = 5 << 4
	h[13] = byte(flags)
	copy(h[20:], "abc")
	binary.BigEndian.PutUint16(h[16:18], transportChecksum(src, dst, ProtoTCP, h))
	return b
}

func TestDecodeTCP(t *testing.T) {
	b := tcp4(t, a4, b4, 5555, 22, TCPSyn)
	p := mustDecode(t, b)
	if p.Proto != ProtoTCP || p.SrcPort != 5555 || p.DstPort != 22 || !p.IsTCPSyn() || string(p.Payload()) != "abc" {
		t.Errorf("got %v flags %#x payload %q", p, p.TCPFlags, p.Payload())
	}
	if !p.ChecksumsValid() {
		t.Error("TCP checksum reported invalid")
	}
	b[len(b)-1] ^= 1
	if mustDecode(t, b).ChecksumsValid() {
		t.Error("corrupt TCP payload passed checksum")
	}
	if p := mustDecode(t, tcp4(t, a4, b4, 5555, 22, TCPSyn|TCPAck)); p.IsTCPSyn() {
		t.Error("SYN-ACK reported as opening SYN")
	}
}

func TestDecodeIPv4Options(t *testing.T) {
	// The golden UDP packet with 4 bytes of options (a NOP padded option list).
	b := unhex(t, goldUDP4)
	o := append([]byte{}, b[:20]...)
	o = append(o, 1, 1, 1, 0)
	o = append(o, b[20:]...)
	o[0] = 0x46
	binary.BigEndian.PutUint16(o[2:4], uint16(len(o)))
	o[10], o[11] = 0, 0
	binary.BigEndian.PutUint16(o[10:12], naiveChecksum(o[:24]))
	p := mustDecode(t, o)
	if p.HeaderLen != 24 || p.DstPort != 53 || string(p.Payload()) != "hello" || !p.ChecksumsValid() {
		t.Errorf("hdr %d port %d payload %q", p.HeaderLen, p.DstPort, p.Payload())
	}
}

// ipv6Ext builds an IPv6 packet from a base header template, inserting the
// given extension headers (type, body) in order.
func ipv6Ext(t *testing.T, base []byte, exts ...ext) []byte {
	t.Helper()
	transport := base[40:]
	proto := base[6]
	out := append([]byte{}, base[:40]...)
	if len(exts) > 0 {
		out[6] = exts[0].typ
	}
	for i, e := range exts {
		next := proto
		if i+1 < len(exts) {
			next = exts[i+1].typ
		}
		h := append([]byte{next}, e.body...)
		out = append(out, h...)
	}
	out = append(out, transport...)
	binary.BigEndian.PutUint16(out[4:6], uint16(len(out)-40))
	return out
}

type ext struct {
	typ  byte
	body []byte // from the second byte on
}

func TestDecodeIPv6ExtensionHeaders(t *testing.T) {
	base := unhex(t, goldUDP6)
	hop := ext{ipv6HopByHop, []byte{0, 1, 4, 0, 0, 0, 0}}                          // PadN
	dst := ext{ipv6DestOpts, []byte{1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}} // 16 bytes
	rt := ext{ipv6Routing, []byte{0, 0, 0, 0, 0, 0, 0}}
	frag := ext{ipv6Fragment, []byte{0, 0, 0, 0, 0, 0, 0}} // offset 0, no more: atomic fragment
	b := ipv6Ext(t, base, hop, dst, rt, frag)
	p := mustDecode(t, b)
	if p.Proto != ProtoUDP || p.SrcPort != 41641 || p.DstPort != 53 || p.HeaderLen != 40+8+16+8+8 ||
		string(p.Payload()) != "hello" || p.Fragment {
		t.Fatalf("got %v hdr %d payload %q", p, p.HeaderLen, p.Payload())
	}
	if !p.ChecksumsValid() {
		t.Error("checksum invalid after extension headers")
	}

	// Truncated extension header chain.
	short := ipv6Ext(t, base, dst)[:40+8]
	binary.BigEndian.PutUint16(short[4:6], 8)
	var q Parsed
	if err := q.Decode(short); err == nil {
		t.Error("truncated destination options accepted")
	}

	// Too long a chain.
	var many []ext
	for range maxExtHeaders + 1 {
		many = append(many, ext{ipv6DestOpts, []byte{0, 1, 4, 0, 0, 0, 0}})
	}
	if err := q.Decode(ipv6Ext(t, base, many...)); err == nil {
		t.Error("overlong extension header chain accepted")
	}
}

func TestDecodeFragments(t *testing.T) {
	udp := unhex(t, goldUDP4)
	set := func(b []byte, frag uint16) []byte {
		b = append([]byte{}, b...)
		binary.BigEndian.PutUint16(b[6:8], frag)
		return b
	}
	var p Parsed

	// First fragment: ports known.
	if err := p.Decode(set(udp, 0x2000)); err != nil || p.Fragment || p.DstPort != 53 {
		t.Errorf("first fragment: %v fragment=%v port %d", err, p.Fragment, p.DstPort)
	}
	// First fragment whose UDP length runs past the packet is fine.
	b := set(udp, 0x2000)
	binary.BigEndian.PutUint16(b[24:26], 1000)
	if err := p.Decode(b); err != nil || string(p.Payload()) != "hello" {
		t.Errorf("first fragment with long UDP length: %v %q", err, p.Payload())
	}
	// ... but not in an unfragmented packet.
	b = set(udp, 0)
	binary.BigEndian.PutUint16(b[24:26], 1000)
	if err := p.Decode(b); err == nil {
		t.Error("UDP length past packet accepted")
	}
	// Later fragment: proto known, no ports.
	if err := p.Decode(set(udp, 100)); err != nil || !p.Fragment || p.Proto != ProtoUDP || p.SrcPort != 0 || p.DstPort != 0 {
		t.Errorf("later fragment: %v fragment=%v proto %v ports %d %d", err, p.Fragment, p.Proto, p.SrcPort, p.DstPort)
	}
	// Fragment overlapping the transport header.
	if err := p.Decode(set(udp, 2)); err == nil {
		t.Error("tiny fragment offset accepted")
	}
	// Fragmented TSMP.
	if err := p.Decode(set(unhex(t, goldPing4), 0x2000)); err == nil {
		t.Error("TSMP first fragment accepted")
	}
	// First fragment too short for the TCP header.
	tcp := tcp4(t, a4, b4, 1, 2, TCPSyn)[:20+8]
	binary.BigEndian.PutUint16(tcp[2:4], 28)
	if err := p.Decode(set(tcp, 0x2000)); err == nil {
		t.Error("first fragment with partial TCP header accepted")
	}

	// IPv6 later fragment.
	six := ipv6Ext(t, unhex(t, goldUDP6), ext{ipv6Fragment, []byte{0, 0x03, 0x21, 0, 0, 0, 1}})
	if err := p.Decode(six); err != nil || !p.Fragment || p.Proto != ProtoUDP || p.HeaderLen != 48 {
		t.Errorf("v6 later fragment: %v fragment=%v proto %v hdr %d", err, p.Fragment, p.Proto, p.HeaderLen)
	}
	six = ipv6Ext(t, unhex(t, goldUDP6), ext{ipv6Fragment, []byte{0, 0, 0x09, 0, 0, 0, 1}})
	if err := p.Decode(six); err == nil {
		t.Error("v6 tiny fragment offset accepted")
	}
}

func TestDecodeMalformed(t *testing.T) {
	udp := unhex(t, goldUDP4)
	mod := func(b []byte, f func([]byte)) []byte {
		b = append([]byte{}, b...)
		f(b)
		return b
	}
	tests := map[string][]byte{
		"empty":          {},
		"version 5":      mod(udp, func(b []byte) { b[0] = 0x55 }),
		"ihl 4":          mod(udp, func(b []byte) { b[0] = 0x44 }),
		"ihl past total": mod(udp, func(b []byte) { b[0] = 0x4f }),
		"total too long": mod(udp, func(b []byte) { b[3]++ }),
		"total < ihl":    mod(udp, func(b []byte) { b[2], b[3] = 0, 19 }),
		"udp len < 8":    mod(udp, func(b []byte) { b[24], b[25] = 0, 7 }),
		"v6 plen long":   mod(unhex(t, goldUDP6), func(b []byte) { b[5]++ }),
		"tcp doff 4":     mod(tcp4(t, a4, b4, 1, 2, 0), func(b []byte) { b[32] = 4 << 4 }),
		"tcp doff long":  mod(tcp4(t, a4, b4, 1, 2, 0), func(b []byte) { b[32] = 15 << 4 }),
		"short tsmp":     mod(unhex(t, goldPing4), func(b []byte) { b[2], b[3] = 0, 26 }),
	}
	for name, b := range tests {
		var p Parsed
		p.Version = 9
		if err := p.Decode(b); err == nil {
			t.Errorf("%s: no error", name)
		}
		if p.Version != 0 || p.Payload() != nil || p.Transport() != nil {
			t.Errorf("%s: Parsed not cleared", name)
		}
	}
	// Every truncation of valid packets fails cleanly.
	for _, s := range []string{goldReq4, goldReq6, goldUDP4, goldUDP6, goldPing4, goldPing6} {
		b := unhex(t, s)
		for n := range len(b) {
			var p Parsed
			if err := p.Decode(b[:n]); err == nil {
				t.Errorf("truncated to %d of %d decoded", n, len(b))
			}
		}
	}
}

func TestChecksumsValidDetectsCorruption(t *testing.T) {
	for _, s := range []string{goldReq4, goldReq6, goldUDP4, goldUDP6} {
		b := unhex(t, s)
		for i := range len(b) {
			c := append([]byte{}, b...)
			c[i] ^= 0x10
			var p Parsed
			if p.Decode(c) != nil {
				continue
			}
			switch {
			case p.Version == 4, p.Version == 6 && i >= 8:
				// The IPv4 header, the addresses and the
				// transport message are covered.
				if p.ChecksumsValid() {
					t.Errorf("%s: flipping byte %d not detected", s[:8], i)
				}
			}
		}
	}
	// A zero UDP checksum over IPv4 means none.
	b := unhex(t, goldUDP4)
	b[26], b[27] = 0, 0
	if !mustDecode(t, b).ChecksumsValid() {
		t.Error("zero IPv4 UDP checksum rejected")
	}
	b = unhex(t, goldUDP6)
	b[46], b[47] = 0, 0
	if mustDecode(t, b).ChecksumsValid() {
		t.Error("zero IPv6 UDP checksum accepted")
	}
}
