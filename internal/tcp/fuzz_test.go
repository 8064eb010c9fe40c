package tcp

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"testing"

	"github.com/microlink-go/microlink/internal/packet"
)

// seedSegment returns the TCP part of a segment built with h and payload.
func seedSegment(h header, payload []byte) []byte {
	b := make([]byte, 1500)
	n, err := buildSegment(b, &h, payload, nil)
	if err != nil {
		panic(err)
	}
	return b[packet.IPHeaderLen(h.src.Addr()):n]
}

// FuzzInbound feeds arbitrary segments, with their checksum made right,
// to a stack with a listener and an established connection.
func FuzzInbound(f *testing.F) {
	a, b := directPair(f, fastConfig())
	c, s := connect(f, a, b, addrA4, addrB4, 80)
	l, _ := b.Listen(81)
	defer l.Close()
	from, to := c.id.local, c.id.remote
	base := header{src: from, dst: to, seq: s.rcvNxt, ack: s.sndNxt, wnd: 1000, wscale: -1}
	for _, h := range []header{
		{src: from, dst: netip.AddrPortFrom(addrB4, 81), seq: 7, flags: flagSYN, mss: 1000, wscale: 7, wnd: 100},
		{src: from, dst: netip.AddrPortFrom(addrB4, 82), seq: 7, flags: flagSYN},
		{src: from, dst: netip.AddrPortFrom(addrB4, 81), seq: 7, ack: 9, flags: flagACK, wscale: -1},
		func() header { h := base; h.flags = flagACK | flagPSH; return h }(),
		func() header { h := base; h.flags = flagACK | flagFIN; return h }(),
		func() header { h := base; h.flags = flagRST; return h }(),
		func() header { h := base; h.flags = flagACK; h.seq += 5000; return h }(),
		func() header { h := base; h.flags = flagSYN | flagACK; h.mss = 1; h.wscale = 14; return h }(),
		func() header {
			h := base
			h.flags = flagACK
			h.sacks[0], h.nsacks = seqRange{h.ack - 10, h.ack + 20}, 1
			return h
		}(),
	} {
		f.Add(seedSegment(h, []byte("data")))
	}
	f.Add([]byte{0, 80, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0xf0, 0x02, 0, 0, 0, 0, 0, 0, 2, 0, 3, 9})
	f.Fuzz(func(t *testing.T, seg []byte) {
		var sg segment
		parseSegment(addrA4, addrB4, seg, &sg) // must not panic on anything
		if len(seg) >= packet.TCPHeaderLen {
			seg = append([]byte(nil), seg...)
			fixChecksum(seg)
		}
		b.Inbound(addrA4, addrB4, seg)
	})
}

// fixChecksum sets the checksum of seg, a segment from addrA4 to addrB4.
func fixChecksum(seg []byte) {
	seg[16], seg[17] = 0, 0
	binary.BigEndian.PutUint16(seg[16:], packet.TransportChecksum(addrA4, addrB4, packet.ProtoTCP, seg))
}

func TestParseRoundTrip(t *testing.T) {
	h := header{
		src: netip.AddrPortFrom(addrA6, 1234), dst: netip.AddrPortFrom(addrB6, 80),
		seq: 0xfffffff0, ack: 42, flags: flagSYN | flagACK, wnd: 65535, mss: 1220, wscale: 2,
	}
	raw := seedSegment(h, []byte("hello"))
	var sg segment
	if err := parseSegment(addrA6, addrB6, raw, &sg); err != nil {
		t.Fatal(err)
	}
	if sg.srcPort != 1234 || sg.dstPort != 80 || sg.seq != h.seq || sg.ack != 42 || sg.flags != h.flags ||
		sg.wnd != 65535 || sg.mss != 1220 || sg.wscale != 2 || string(sg.payload) != "hello" || sg.len() != 6 {
		t.Fatalf("parsed %+v", sg)
	}
	raw[len(raw)-1] ^= 1
	if err := parseSegment(addrA6, addrB6, raw, &sg); err != errChecksum {
		t.Fatalf("corrupt segment: %v", err)
	}
	// A checksum over the wrong addresses fails too: the pseudo header counts.
	raw[len(raw)-1] ^= 1
	if err := parseSegment(addrA6, addrA6, raw, &sg); err != errChecksum {
		t.Fatalf("wrong pseudo header: %v", err)
	}
}

func TestSeqArithmeticWraps(t *testing.T) {
	if !seqLT(0xffffff00, 5) || seqLT(5, 0xffffff00) || !seqGT(3, 0xfffffffe) || seqMax(0xfffffffe, 3) != 3 {
		t.Fatal("sequence comparison does not wrap")
	}
}

func TestSACKOption(t *testing.T) {
	h := header{src: netip.AddrPortFrom(addrA4, 1), dst: netip.AddrPortFrom(addrB4, 2), flags: flagACK, wscale: -1,
		sacks: [maxSACKBlocks]seqRange{{100, 200}, {300, 400}}, nsacks: 2}
	raw := seedSegment(h, nil)
	want := []byte{optNOP, optNOP, optSACK, 18, 0, 0, 0, 100, 0, 0, 0, 200, 0, 0, 1, 44, 0, 0, 1, 144}
	if len(raw) != 20+len(want) || raw[12]>>4 != byte((20+len(want))/4) || string(raw[20:]) != string(want) {
		t.Fatalf("segment % x", raw)
	}
	var sg segment
	if err := parseSegment(addrA4, addrB4, raw, &sg); err != nil || sg.nsacks != 2 || sg.sacks[0] != (seqRange{100, 200}) || sg.sacks[1] != (seqRange{300, 400}) {
		t.Fatalf("SACK blocks of an ACK: %+v %v", sg, err)
	}
	// A malformed option loses the SACK blocks, not the segment.
	bad := slices.Clone(raw)
	bad[23] = 17
	fixChecksum(bad)
	if err := parseSegment(addrA4, addrB4, bad, &sg); err != nil || sg.nsacks != 0 {
		t.Fatalf("malformed SACK option: %+v %v", sg, err)
	}
	// MSS and window scale count only in a SYN.
	late := header{src: h.src, dst: h.dst, flags: flagACK, mss: 536, wscale: 3}
	if err := parseSegment(addrA4, addrB4, seedSegment(late, nil), &sg); err != nil || sg.mss != 0 || sg.wscale != -1 {
		t.Fatalf("options outside a SYN: %+v %v", sg, err)
	}
	syn := header{src: h.src, dst: h.dst, flags: flagSYN, mss: 1240, wscale: 2, sackOK: true}
	if err := parseSegment(addrA4, addrB4, seedSegment(syn, nil), &sg); err != nil || !sg.sackOK || sg.mss != 1240 || sg.wscale != 2 {
		t.Fatalf("SYN options: %+v %v", sg, err)
	}
}

// TestOutOfOrderRanges: ranges merge, the latest comes first, and filling
// the hole takes them all in.
func TestOutOfOrderRanges(t *testing.T) {
	a, b := directPair(t, fastConfig())
	_, s := connect(t, a, b, addrA4, addrB4, 80)
	s.mu.Lock()
	defer s.mu.Unlock()
	base := s.rcvNxt
	put := func(off, n int) {
		sg := segment{seq: base + uint32(off), payload: make([]byte, n)}
		for i := range sg.payload {
			sg.payload[i] = byte(off + i)
		}
		s.receive(&sg)
	}
	put(300, 100)
	put(100, 100)
	put(200, 100) // joins both
	put(600, 50)
	if s.nooo != 2 || s.ooo[0] != (seqRange{base + 600, base + 650}) || s.ooo[1] != (seqRange{base + 100, base + 400}) {
		t.Fatalf("ranges %v", s.ooo[:s.nooo])
	}
	put(0, 100)
	if s.rcvNxt != base+400 || s.rcvBuf.n != 400 || s.nooo != 1 {
		t.Fatalf("rcvNxt +%d, %d buffered, %d ranges", s.rcvNxt-base, s.rcvBuf.n, s.nooo)
	}
	got := make([]byte, 400)
	s.rcvBuf.read(got)
	for i, v := range got {
		if v != byte(i) {
			t.Fatalf("byte %d = %d", i, v)
		}
	}
}
