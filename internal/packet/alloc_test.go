package packet

import (
	"net/netip"
	"testing"

	"github.com/microlink-go/microlink/internal/key"
)

func TestZeroAllocs(t *testing.T) {
	f := testFilter()
	req4, req6 := unhex(t, goldReq4), unhex(t, goldReq6)
	udp4, ping6 := unhex(t, goldUDP4), unhex(t, goldPing6)
	syn := pkt(t, a4, b4, ProtoTCP, tcpHdr(1000, 22, TCPSyn))
	out := mustDecode(t, pkt(t, b4, outside, ProtoUDP, udpHdr(5000, 53)))
	reply := mustDecode(t, pkt(t, outside, b4, ProtoUDP, udpHdr(53, 5000)))
	f.Outbound(out)
	buf := make([]byte, 1500)
	var p Parsed
	var k key.DiscoPublic
	src4, dst4 := netip.AddrPortFrom(a4, 1), netip.AddrPortFrom(b4, 2)
	src6, dst6 := netip.AddrPortFrom(a6, 1), netip.AddrPortFrom(b6, 2)
	payload := []byte("payload")

	cases := map[string]func(){
		"Decode": func() {
			_ = p.Decode(req4)
			_ = p.Decode(req6)
			_ = p.Decode(udp4)
			_ = p.Decode(ping6)
		},
		"Inbound": func() {
			_ = p.Decode(syn)
			f.Inbound(&p)
			_ = p.Decode(req6)
			f.Inbound(&p)
			f.Inbound(reply)
		},
		"Outbound": func() { f.Outbound(out) },
		"ChecksumsValid": func() {
			_ = p.Decode(udp4)
			p.ChecksumsValid()
		},
		"BuildUDP": func() {
			_, _ = BuildUDP(buf, src4, dst4, payload)
			_, _ = BuildUDP(buf, src6, dst6, payload)
		},
		"EchoReply": func() {
			_, _ = EchoReply(buf, req4)
			_, _ = EchoReply(buf, req6)
		},
		"BuildEchoRequest": func() { _, _ = BuildEchoRequest(buf, a6, b6, 1, 2, payload) },
		"TSMP": func() {
			_ = p.Decode(ping6)
			_, _ = BuildTSMPPong(buf, &p, 1)
			_, _ = BuildTSMPPing(buf, a4, b4, [8]byte{})
			_, _ = BuildTSMPReject(buf, a4, b4, TSMPReject{Proto: ProtoTCP})
			_, _ = BuildTSMPDiscoKey(buf, a6, b6, k)
			p.TSMPPingData()
			p.TSMPDiscoKey()
		},
	}
	for name, fn := range cases {
		if n := testing.AllocsPerRun(100, fn); n != 0 {
			t.Errorf("%s: %v allocations per run", name, n)
		}
	}
}

func BenchmarkDecodeInbound(b *testing.B) {
	f := testFilter()
	syn := pkt(b, a4, b4, ProtoTCP, tcpHdr(1000, 22, TCPSyn))
	var p Parsed
	b.ReportAllocs()
	for b.Loop() {
		_ = p.Decode(syn)
		f.Inbound(&p)
	}
}

func BenchmarkBuildUDP(b *testing.B) {
	buf := make([]byte, 1500)
	payload := make([]byte, 1200)
	src, dst := netip.AddrPortFrom(a4, 1), netip.AddrPortFrom(b4, 2)
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		_, _ = BuildUDP(buf, src, dst, payload)
	}
}

// TestFlowCacheChurnZeroAllocs checks that the flow cache, which grows
// with its flows, allocates nothing once full: a new flow then only
// replaces the least recently used one.
func TestFlowCacheChurnZeroAllocs(t *testing.T) {
	c := newFlowCache(maxFlows)
	port := 0
	next := func() flow {
		port++
		return flow{proto: ProtoUDP, src: netip.AddrPortFrom(a4, uint16(port)), dst: netip.AddrPortFrom(b4, uint16(port>>16))}
	}
	for range 4 * maxFlows {
		c.add(next())
	}
	if n := testing.AllocsPerRun(10000, func() { c.add(next()) }); n != 0 {
		t.Errorf("%v allocations per new flow in a full cache", n)
	}
	if got := c.len(); got != maxFlows {
		t.Errorf("cache holds %d flows, want %d", got, maxFlows)
	}
}
