package packet

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
)

// pkt returns an IP packet from src to dst carrying transport.
func pkt(t testing.TB, src, dst netip.Addr, proto Proto, transport []byte) []byte {
	t.Helper()
	b := make([]byte, IPHeaderLen(src)+len(transport))
	hl, err := putIPHeader(b, proto, src, dst, 0, len(transport))
	if err != nil {
		t.Fatal(err)
	}
	copy(b[hl:], transport)
	return b
}

func tcpHdr(sport, dport uint16, flags TCPFlags) []byte {
	h := make([]byte, TCPHeaderLen)
	binary.BigEndian.PutUint16(h[0:], sport)
	binary.BigEndian.PutUint16(h[2:], dport)
	h[12] = 5 << 4
	h[13] = byte(flags)
	return h
}

func udpHdr(sport, dport uint16) []byte {
	h := make([]byte, UDPHeaderLen+4)
	binary.BigEndian.PutUint16(h[0:], sport)
	binary.BigEndian.PutUint16(h[2:], dport)
	binary.BigEndian.PutUint16(h[4:], uint16(len(h)))
	return h
}

func icmpHdr(typ uint8) []byte { return []byte{typ, 0, 0, 0, 0, 1, 0, 1} }

var (
	other4  = netip.MustParseAddr("100.64.9.9")
	gre4    = netip.MustParseAddr("100.64.0.5")
	outside = netip.MustParseAddr("10.0.0.1")
	notUs4  = netip.MustParseAddr("100.64.0.3")
	other6  = netip.MustParseAddr("fd7a:115c:a1e0::99")
	notUs6  = netip.MustParseAddr("fd7a:115c:a1e0::3")
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func testFilter() *Filter {
	rules := []Rule{
		{Srcs: []netip.Prefix{pfx("100.64.0.1/32")}, Dsts: []PortRange{{Net: pfx("100.64.0.2/32"), First: 22, Last: 22}}},
		{Srcs: []netip.Prefix{pfx("100.64.0.0/10")}, Dsts: []PortRange{{Net: pfx("0.0.0.0/0"), First: 80, Last: 90}}, Protos: []Proto{ProtoTCP}},
		{Srcs: []netip.Prefix{pfx("fd7a:115c:a1e0::1/128")}, Dsts: []PortRange{{Net: pfx("fd7a:115c:a1e0::2/128"), First: 53, Last: 53}}, Protos: []Proto{ProtoUDP}},
		{Srcs: []netip.Prefix{pfx("100.64.0.5/32")}, Dsts: []PortRange{{Net: pfx("100.64.0.2/32"), First: 0, Last: 65535}}, Protos: []Proto{47}},
		{Srcs: []netip.Prefix{pfx("100.64.0.5/32")}, Dsts: []PortRange{{Net: pfx("100.64.0.2/32"), First: 1, Last: 65535}}, Protos: []Proto{50}},
	}
	return NewFilter(rules, []netip.Prefix{pfx("100.64.0.2/32"), pfx("fd7a:115c:a1e0::2/128")})
}

func TestFilterInbound(t *testing.T) {
	f := testFilter()
	tests := []struct {
		name string
		pkt  []byte
		want Verdict
	}{
		{"tcp syn allowed port", pkt(t, a4, b4, ProtoTCP, tcpHdr(1000, 22, TCPSyn)), Accept},
		{"tcp syn other port", pkt(t, a4, b4, ProtoTCP, tcpHdr(1000, 23, TCPSyn)), Drop},
		{"tcp syn other source", pkt(t, other4, b4, ProtoTCP, tcpHdr(1000, 22, TCPSyn)), Drop},
		{"tcp non-syn any port", pkt(t, outside, b4, ProtoTCP, tcpHdr(1000, 23, TCPAck)), Accept},
		{"tcp syn-ack any port", pkt(t, outside, b4, ProtoTCP, tcpHdr(1000, 23, TCPSyn|TCPAck)), Accept},
		{"tcp non-syn not us", pkt(t, a4, notUs4, ProtoTCP, tcpHdr(1000, 22, TCPAck)), Drop},
		{"tcp range low", pkt(t, other4, b4, ProtoTCP, tcpHdr(1, 80, TCPSyn)), Accept},
		{"tcp range high", pkt(t, other4, b4, ProtoTCP, tcpHdr(1, 90, TCPSyn)), Accept},
		{"tcp range above", pkt(t, other4, b4, ProtoTCP, tcpHdr(1, 91, TCPSyn)), Drop},
		{"tcp range below", pkt(t, other4, b4, ProtoTCP, tcpHdr(1, 79, TCPSyn)), Drop},
		{"udp default protos", pkt(t, a4, b4, ProtoUDP, udpHdr(1000, 22)), Accept},
		{"udp disallowed port", pkt(t, a4, b4, ProtoUDP, udpHdr(1000, 21)), Drop},
		{"udp on tcp-only rule", pkt(t, other4, b4, ProtoUDP, udpHdr(1000, 85)), Drop},
		{"udp wrong destination", pkt(t, a4, notUs4, ProtoUDP, udpHdr(1000, 22)), Drop},
		{"echo request with access", pkt(t, a4, b4, ProtoICMPv4, icmpHdr(ICMPv4EchoRequest)), Accept},
		{"echo request via tcp-only rule", pkt(t, other4, b4, ProtoICMPv4, icmpHdr(ICMPv4EchoRequest)), Accept},
		{"echo request without access", pkt(t, outside, b4, ProtoICMPv4, icmpHdr(ICMPv4EchoRequest)), Drop},
		{"echo request not us", pkt(t, a4, notUs4, ProtoICMPv4, icmpHdr(ICMPv4EchoRequest)), Drop},
		{"echo reply always", pkt(t, outside, b4, ProtoICMPv4, icmpHdr(ICMPv4EchoReply)), Accept},
		{"unreachable always", pkt(t, outside, b4, ProtoICMPv4, icmpHdr(ICMPv4Unreachable)), Accept},
		{"time exceeded always", pkt(t, outside, b4, ProtoICMPv4, icmpHdr(ICMPv4TimeExceeded)), Accept},
		{"echo reply not us", pkt(t, outside, notUs4, ProtoICMPv4, icmpHdr(ICMPv4EchoReply)), Drop},
		{"icmp other type no access", pkt(t, outside, b4, ProtoICMPv4, icmpHdr(13)), Drop},
		{"v6 udp allowed", pkt(t, a6, b6, ProtoUDP, udpHdr(1000, 53)), Accept},
		{"v6 udp other port", pkt(t, a6, b6, ProtoUDP, udpHdr(1000, 54)), Drop},
		{"v6 tcp syn on udp rule", pkt(t, a6, b6, ProtoTCP, tcpHdr(1000, 53, TCPSyn)), Drop},
		{"v6 tcp non-syn", pkt(t, other6, b6, ProtoTCP, tcpHdr(1000, 53, TCPAck)), Accept},
		{"v6 echo request with access", pkt(t, a6, b6, ProtoICMPv6, icmpHdr(ICMPv6EchoRequest)), Accept},
		{"v6 echo request without access", pkt(t, other6, b6, ProtoICMPv6, icmpHdr(ICMPv6EchoRequest)), Drop},
		{"v6 echo reply always", pkt(t, other6, b6, ProtoICMPv6, icmpHdr(ICMPv6EchoReply)), Accept},
		{"v6 packet too big always", pkt(t, other6, b6, ProtoICMPv6, icmpHdr(ICMPv6PacketTooBig)), Accept},
		{"v6 echo request not us", pkt(t, a6, notUs6, ProtoICMPv6, icmpHdr(ICMPv6EchoRequest)), Drop},
		{"v6 source for v4 rules", pkt(t, a6, b6, ProtoTCP, tcpHdr(1000, 22, TCPSyn)), Drop},
		{"portless proto all ports", pkt(t, gre4, b4, 47, []byte{0, 0, 8, 0}), Accept},
		{"portless proto other source", pkt(t, a4, b4, 47, []byte{0, 0, 8, 0}), Drop},
		{"portless proto partial ports", pkt(t, gre4, b4, 50, []byte{0, 0, 8, 0}), Drop},
		{"tsmp", pkt(t, outside, b4, ProtoTSMP, []byte("p12345678")), Accept},
		{"tsmp not us", pkt(t, outside, notUs4, ProtoTSMP, []byte("p12345678")), Drop},
		{"multicast", pkt(t, a4, netip.MustParseAddr("224.0.0.251"), ProtoUDP, udpHdr(5353, 5353)), Drop},
		{"v6 link-local", pkt(t, a6, netip.MustParseAddr("fe80::1"), ProtoUDP, udpHdr(1, 53)), Drop},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustDecode(t, tt.pkt)
			if got := f.Inbound(p); got != tt.want {
				t.Errorf("Inbound(%v) = %v, want %v", p, got, tt.want)
			}
		})
	}
}

func TestFilterFragments(t *testing.T) {
	f := testFilter()
	b := pkt(t, outside, b4, ProtoUDP, make([]byte, 100))
	binary.BigEndian.PutUint16(b[6:8], 20) // offset 160 bytes
	if v := f.Inbound(mustDecode(t, b)); v != Accept {
		t.Errorf("later fragment: %v", v)
	}
	b = pkt(t, outside, b4, ProtoUDP, udpHdr(1, 22))
	binary.BigEndian.PutUint16(b[6:8], 0x2000) // first fragment
	if v := f.Inbound(mustDecode(t, b)); v != Drop {
		t.Errorf("first fragment of a disallowed flow: %v", v)
	}
	if v := DenyAll().Inbound(mustDecode(t, b)); v != Drop {
		t.Errorf("DenyAll: later fragment %v", v)
	}
}

func TestFilterReturnTraffic(t *testing.T) {
	f := testFilter()
	// We (b4:5000) send to outside:53; its reply is allowed back in.
	out := mustDecode(t, pkt(t, b4, outside, ProtoUDP, udpHdr(5000, 53)))
	reply := mustDecode(t, pkt(t, outside, b4, ProtoUDP, udpHdr(53, 5000)))
	otherPort := mustDecode(t, pkt(t, outside, b4, ProtoUDP, udpHdr(53, 5001)))
	otherHost := mustDecode(t, pkt(t, other4, b4, ProtoUDP, udpHdr(53, 5000)))
	if f.Inbound(reply) != Drop {
		t.Fatal("reply accepted before any outbound packet")
	}
	if v := f.Outbound(out); v != Accept {
		t.Fatalf("Outbound = %v", v)
	}
	if f.Inbound(reply) != Accept {
		t.Error("reply to outbound flow dropped")
	}
	if f.Inbound(otherPort) != Drop || f.Inbound(otherHost) != Drop {
		t.Error("traffic of another flow accepted")
	}
	// The same for IPv6 and for new filters sharing state.
	out6 := mustDecode(t, pkt(t, b6, other6, ProtoUDP, udpHdr(6000, 7000)))
	reply6 := mustDecode(t, pkt(t, other6, b6, ProtoUDP, udpHdr(7000, 6000)))
	f.Outbound(out6)
	g := NewFilterFrom(f, nil, []netip.Prefix{pfx("100.64.0.2/32"), pfx("fd7a:115c:a1e0::2/128")})
	if g.Inbound(reply) != Accept || g.Inbound(reply6) != Accept {
		t.Error("NewFilterFrom lost flow state")
	}
	if NewFilter(nil, []netip.Prefix{pfx("100.64.0.2/32")}).Inbound(reply) != Drop {
		t.Error("fresh filter has flow state")
	}
	// Outbound drops what no peer should get.
	if f.Outbound(mustDecode(t, pkt(t, b4, netip.MustParseAddr("239.1.1.1"), ProtoUDP, udpHdr(1, 2)))) != Drop {
		t.Error("outbound multicast accepted")
	}
	if f.Outbound(mustDecode(t, pkt(t, b4, netip.MustParseAddr("169.254.169.254"), ProtoUDP, udpHdr(1, 80)))) != Accept {
		t.Error("outbound metadata address dropped")
	}
}

func TestFlowCacheEviction(t *testing.T) {
	f := NewFilter(nil, []netip.Prefix{pfx("100.64.0.2/32")})
	send := func(port uint16) {
		f.Outbound(mustDecode(t, pkt(t, b4, outside, ProtoUDP, udpHdr(port, 53))))
	}
	back := func(port uint16) Verdict {
		return f.Inbound(mustDecode(t, pkt(t, outside, b4, ProtoUDP, udpHdr(53, port))))
	}
	for i := range maxFlows {
		send(uint16(10000 + i))
	}
	// Touch the oldest flow so that the second oldest is evicted next.
	if back(10000) != Accept {
		t.Fatal("oldest flow missing")
	}
	send(20000)
	if got := f.flows.len(); got != maxFlows {
		t.Errorf("cache holds %d flows, want %d", got, maxFlows)
	}
	if back(10001) != Drop {
		t.Error("least recently used flow not evicted")
	}
	if back(10000) != Accept || back(20000) != Accept || back(10000+maxFlows-1) != Accept {
		t.Error("recent flows evicted")
	}
	// Re-adding an existing flow does not grow the cache.
	send(20000)
	if got := f.flows.len(); got != maxFlows {
		t.Errorf("cache holds %d flows after re-add", got)
	}
}

func TestFlowCacheOrder(t *testing.T) {
	c := newFlowCache(3)
	fl := func(i int) flow {
		return flow{proto: ProtoUDP, src: netip.AddrPortFrom(a4, uint16(i))}
	}
	for i := range 10 {
		c.add(fl(i))
	}
	// Using 7 makes 8 the least recently used; adding 10 evicts it.
	if !c.has(fl(7)) {
		t.Fatal("flow 7 missing")
	}
	c.add(fl(10))
	// Remaining: the three most recently used.
	var have []int
	for i := range 11 {
		c.mu.Lock()
		_, ok := c.index[fl(i)]
		c.mu.Unlock()
		if ok {
			have = append(have, i)
		}
	}
	if fmt.Sprint(have) != "[7 9 10]" {
		t.Errorf("cache holds %v", have)
	}
	// Walk the list both ways.
	var fwd, bwd []uint16
	for i := c.head; i >= 0; i = c.ents[i].next {
		fwd = append(fwd, c.ents[i].f.src.Port())
	}
	for i := c.tail; i >= 0; i = c.ents[i].prev {
		bwd = append(bwd, c.ents[i].f.src.Port())
	}
	if fmt.Sprint(fwd) != "[10 7 9]" || fmt.Sprint(bwd) != "[9 7 10]" {
		t.Errorf("list %v / %v", fwd, bwd)
	}
}

func TestAllowAllDenyAll(t *testing.T) {
	pkts := [][]byte{
		pkt(t, outside, notUs4, ProtoTCP, tcpHdr(1, 2, TCPSyn)),
		pkt(t, outside, b4, ProtoUDP, udpHdr(1, 2)),
		pkt(t, other6, b6, ProtoICMPv6, icmpHdr(ICMPv6EchoReply)),
		pkt(t, other6, b6, ProtoTSMP, []byte("p12345678")),
	}
	for _, b := range pkts {
		p := mustDecode(t, b)
		if AllowAll().Inbound(p) != Accept {
			t.Errorf("AllowAll dropped %v", p)
		}
		if DenyAll().Inbound(p) != Drop {
			t.Errorf("DenyAll accepted %v", p)
		}
	}
	var bad Parsed
	_ = bad.Decode([]byte{0x45})
	if AllowAll().Inbound(&bad) != Drop || testFilter().Inbound(&bad) != Drop {
		t.Error("undecoded packet accepted")
	}
}

func TestFilterEmptyRulesStillAllowsReplies(t *testing.T) {
	// A control server's empty packet filter blocks new inbound
	// connections but not replies.
	f := NewFilter(nil, []netip.Prefix{pfx("100.64.0.2/32")})
	if f.Inbound(mustDecode(t, pkt(t, a4, b4, ProtoTCP, tcpHdr(1, 22, TCPSyn)))) != Drop {
		t.Error("SYN accepted with no rules")
	}
	if f.Inbound(mustDecode(t, pkt(t, a4, b4, ProtoICMPv4, icmpHdr(ICMPv4EchoRequest)))) != Drop {
		t.Error("echo request accepted with no rules")
	}
	if f.Inbound(mustDecode(t, pkt(t, a4, b4, ProtoICMPv4, icmpHdr(ICMPv4EchoReply)))) != Accept {
		t.Error("echo reply dropped with no rules")
	}
	if f.Inbound(mustDecode(t, pkt(t, a4, b4, ProtoTCP, tcpHdr(1, 22, TCPAck)))) != Accept {
		t.Error("TCP ACK dropped with no rules")
	}
}

func TestFilterWildcardRule(t *testing.T) {
	// The rule a control server sends for "allow all": SrcIPs ["*"],
	// DstPorts [{"*", 0-65535}].
	r, err := ParseRule([]string{"*"}, []Dst{{IP: "*", First: 0, Last: 65535}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	f := NewFilter([]Rule{r}, []netip.Prefix{pfx("100.64.0.2/32"), pfx("fd7a:115c:a1e0::2/128")})
	for _, b := range [][]byte{
		pkt(t, outside, b4, ProtoTCP, tcpHdr(1, 22, TCPSyn)),
		pkt(t, other6, b6, ProtoUDP, udpHdr(1, 9)),
		pkt(t, outside, b4, ProtoICMPv4, icmpHdr(ICMPv4EchoRequest)),
	} {
		if p := mustDecode(t, b); f.Inbound(p) != Accept {
			t.Errorf("wildcard dropped %v", p)
		}
	}
	if p := mustDecode(t, pkt(t, outside, notUs4, ProtoTCP, tcpHdr(1, 22, TCPSyn))); f.Inbound(p) != Drop {
		t.Error("wildcard rule let in a packet for another node")
	}
	if p := mustDecode(t, pkt(t, outside, b4, 47, []byte{0, 0, 8, 0})); f.Inbound(p) != Drop {
		t.Error("wildcard rule with default protos let in GRE")
	}
}

func TestFilterConcurrent(t *testing.T) {
	f := testFilter()
	// Together the goroutines record fewer flows than the cache holds, so
	// a reply can only be dropped by a fault, not by eviction while a
	// goroutine waits for the CPU.
	const perGoroutine = maxFlows / 4 / 2
	done := make(chan struct{})
	record := func(port uint16) (out, in Parsed, ok bool) {
		ok = out.Decode(pkt(t, b4, outside, ProtoUDP, udpHdr(port, 53))) == nil &&
			in.Decode(pkt(t, outside, b4, ProtoUDP, udpHdr(53, port))) == nil
		return out, in, ok
	}
	for g := range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range perGoroutine {
				out, in, ok := record(uint16(g*1000 + i))
				if !ok {
					t.Error("decode failed")
					return
				}
				f.Outbound(&out)
				if f.Inbound(&in) != Accept {
					t.Error("reply to a just-recorded flow dropped")
					return
				}
			}
		}()
	}
	for range 4 {
		<-done
	}
	// More distinct flows than the cache holds: it stays at its bound.
	for i := range 2 * maxFlows {
		out, _, ok := record(uint16(10000 + i))
		if !ok {
			t.Fatal("decode failed")
		}
		f.Outbound(&out)
	}
	if n := f.flows.len(); n != maxFlows {
		t.Errorf("%d flows after %d distinct ones, want %d", n, 4*perGoroutine+2*maxFlows, maxFlows)
	}
}
