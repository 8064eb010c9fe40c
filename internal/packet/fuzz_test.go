package packet

import (
	"bytes"
	"testing"
)

func fuzzSeeds(f *testing.F) {
	for _, s := range []string{goldReq4, goldRep4, goldReq6, goldRep6, goldUDP4, goldUDP6, goldPing4, goldPong4, goldPing6, goldPong6} {
		b, _ := hexDecode(s)
		f.Add(b)
	}
	f.Add(pkt(f, a4, b4, ProtoTCP, tcpHdr(1, 2, TCPSyn)))
	f.Add(pkt(f, a6, b6, ProtoTCP, tcpHdr(1, 2, TCPAck)))
	f.Add(pkt(f, a4, b4, ProtoTSMP, append([]byte{'a'}, make([]byte, 32)...)))
	f.Add(pkt(f, a6, b6, ProtoTSMP, []byte("!\x06A\x01\x02\x03\x04\x01")))
	f.Add([]byte{})
	f.Add([]byte{0x45})
	f.Add([]byte{0x60, 0, 0, 0, 0, 8, 0, 64})
}

// FuzzDecode checks that Decode, the accessors and the filter never panic,
// and that a decoded packet's parts lie within it.
func FuzzDecode(f *testing.F) {
	fuzzSeeds(f)
	flt := testFilter()
	f.Fuzz(func(t *testing.T, b []byte) {
		var p Parsed
		if err := p.Decode(b); err != nil {
			if p.Version != 0 {
				t.Fatal("failed Decode left a version")
			}
			if flt.Inbound(&p) != Drop || AllowAll().Inbound(&p) != Drop {
				t.Fatal("undecodable packet accepted")
			}
			return
		}
		if len(p.Buffer()) > len(b) || p.HeaderLen > len(p.Buffer()) || len(p.Payload()) > len(p.Transport()) {
			t.Fatalf("bad bounds: buf %d hdr %d transport %d payload %d", len(p.Buffer()), p.HeaderLen, len(p.Transport()), len(p.Payload()))
		}
		if p.Version == 4 && !p.Src.Is4() || p.Version == 6 && !p.Src.Is6() {
			t.Fatalf("address family does not match version %d", p.Version)
		}
		if p.Proto == ProtoUDP && !p.IsFragment() {
			if t4 := p.Transport(); int(t4[4])<<8|int(t4[5]) != UDPHeaderLen+len(p.Payload()) {
				t.Fatalf("whole UDP datagram with %d payload bytes, header says %d in all", len(p.Payload()), int(t4[4])<<8|int(t4[5]))
			}
		}
		_ = p.String()
		p.ChecksumsValid()
		p.IsEchoRequest()
		p.IsEchoReply()
		p.IsICMPError()
		p.IsTCPSyn()
		p.TSMPPingData()
		p.TSMPPongData()
		p.TSMPReject()
		p.TSMPDiscoKey()
		flt.Inbound(&p)
		flt.Outbound(&p)
		DenyAll().Inbound(&p)
	})
}

// FuzzEchoReply checks that EchoReply never panics and that every reply it
// writes decodes as an echo reply with valid checksums that mirrors the
// request.
func FuzzEchoReply(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		b = fixEchoChecksums(b)
		var req Parsed
		reqOK := req.Decode(b) == nil
		dst := make([]byte, len(b)+64)
		n, err := EchoReply(dst, b)
		if err != nil {
			if reqOK && req.IsEchoRequest() && !req.moreFrags {
				t.Fatalf("no reply to a valid echo request: %v", err)
			}
			return
		}
		if !reqOK || !req.IsEchoRequest() {
			t.Fatal("reply to something that is not an echo request")
		}
		var rep Parsed
		if err := rep.Decode(dst[:n]); err != nil {
			t.Fatalf("reply does not decode: %v", err)
		}
		if !rep.IsEchoReply() || !rep.ChecksumsValid() || rep.Src != req.Dst || rep.Dst != req.Src ||
			rep.ICMPID != req.ICMPID || rep.ICMPSeq != req.ICMPSeq || !bytes.Equal(rep.Payload(), req.Payload()) {
			t.Fatalf("bad reply %x to %x", dst[:n], b)
		}
		// In place gives the same bytes.
		in := append([]byte{}, b...)
		m, err := EchoReply(in, in)
		if err != nil || !bytes.Equal(in[:m], dst[:n]) {
			t.Fatalf("in place: %v %x", err, in[:m])
		}
	})
}

// FuzzTSMP checks the TSMP parsers and that every ping gets a pong that
// decodes and carries its data.
func FuzzTSMP(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		var p Parsed
		if p.Decode(b) != nil {
			return
		}
		p.TSMPType()
		p.TSMPReject()
		p.TSMPDiscoKey()
		p.TSMPPongData()
		data, ok := p.TSMPPingData()
		out := make([]byte, 64)
		n, err := BuildTSMPPong(out, &p, 4242)
		if ok != (err == nil) {
			t.Fatalf("ping %v but pong error %v", ok, err)
		}
		if !ok {
			return
		}
		var q Parsed
		if err := q.Decode(out[:n]); err != nil {
			t.Fatalf("pong does not decode: %v", err)
		}
		got, port, ok := q.TSMPPongData()
		if !ok || got != data || port != 4242 || q.Src != p.Dst || q.Dst != p.Src || !q.ChecksumsValid() {
			t.Fatalf("bad pong %x", out[:n])
		}
	})
}

// FuzzParseSrc checks that ParseSrc never panics and returns valid,
// masked prefixes.
func FuzzParseSrc(f *testing.F) {
	for _, s := range []string{"*", "100.64.0.1", "100.64.0.0/10", "10.0.0.1-10.0.0.9", "::1-::ff", "cap:x", "1.2.3.4-::1", "fe80::1%x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ps, err := ParseSrc(s)
		if err != nil {
			return
		}
		if len(ps) > 256 {
			t.Fatalf("%q: %d prefixes", s, len(ps))
		}
		for _, p := range ps {
			if !p.IsValid() || p != p.Masked() {
				t.Fatalf("%q: bad prefix %v", s, p)
			}
		}
	})
}

// fixEchoChecksums returns b with correct IPv4 header and ICMP checksums if
// it decodes as an echo request, so that fuzzing reaches the reply path.
func fixEchoChecksums(b []byte) []byte {
	var p Parsed
	if p.Decode(b) != nil || !p.IsEchoRequest() {
		return b
	}
	b = append([]byte{}, b...)
	if p.Decode(b) != nil {
		return b
	}
	if p.Version == 4 {
		b[10], b[11] = 0, 0
		c := Checksum(b[:p.HeaderLen])
		b[10], b[11] = byte(c>>8), byte(c)
	}
	m := b[p.HeaderLen:len(p.Buffer())]
	m[2], m[3] = 0, 0
	var c uint16
	if p.Version == 4 {
		c = Checksum(m)
	} else {
		c = transportChecksum(p.Src, p.Dst, ProtoICMPv6, m)
	}
	m[2], m[3] = byte(c>>8), byte(c)
	return b
}
