package tunnel

import (
	"net/netip"
	"testing"

	"github.com/microlink-go/microlink/internal/key"
	"github.com/microlink-go/microlink/internal/packet"
)

// TestForwarder: packets that pass the filter but are not the stack's go
// to the forwarder: all but TSMP and replies to the stack's own pings in
// TUN mode (All), only those to other addresses otherwise; packets the
// filter refuses go nowhere.
func TestForwarder(t *testing.T) {
	var peer key.NodePublic
	var sent [][]byte
	s := New(Config{Output: func(p []byte) error { sent = append(sent, append([]byte(nil), p...)); return nil }})
	defer s.Close()
	s.SetAddresses([]netip.Prefix{addrA4})
	routed := netip.MustParsePrefix("198.19.1.0/24")
	s.SetFilter(packet.NewFilter([]packet.Rule{{
		Srcs: []netip.Prefix{addrB4},
		Dsts: []packet.PortRange{{Net: addrA4, First: 0, Last: 65535}, {Net: routed, First: 0, Last: 65535}},
	}}, []netip.Prefix{addrA4, routed}))
	var got [][]byte
	for _, all := range []bool{false, true} {
		s.SetForwarder(&Forwarder{All: all, Deliver: func(p []byte) { got = append(got, append([]byte(nil), p...)) }})
		got, sent = nil, nil
		b := make([]byte, 200)
		udp := func(dst netip.Addr, port uint16) []byte {
			n, _ := packet.BuildUDP(b, netip.AddrPortFrom(addrB4.Addr(), 1000), netip.AddrPortFrom(dst, port), []byte("x"))
			return b[:n]
		}
		s.Inbound(peer, udp(netip.MustParseAddr("198.19.1.5"), 53)) // routed: forwarded
		s.Inbound(peer, udp(netip.MustParseAddr("198.19.2.5"), 53)) // not routed: dropped
		s.Inbound(peer, udp(addrA4.Addr(), 53))                     // local: forwarded only in TUN mode
		n, _ := packet.BuildEchoRequest(b, addrB4.Addr(), addrA4.Addr(), 7, 1, nil)
		s.Inbound(peer, b[:n]) // answered by the stack, or by the host in TUN mode
		want := 1
		if all {
			want = 3
		}
		if len(got) != want {
			t.Fatalf("All=%v: %d packets forwarded, want %d", all, len(got), want)
		}
		if !all && len(sent) != 1 {
			t.Fatalf("the stack answered %d pings, want 1", len(sent))
		}
	}
	if s.Forwarded() != 4 {
		t.Fatalf("Forwarded() = %d", s.Forwarded())
	}

	// Outbound drops what no peer should get, and records flows.
	b := make([]byte, 200)
	n, _ := packet.BuildUDP(b, netip.AddrPortFrom(addrA4.Addr(), 5000), netip.MustParseAddrPort("224.0.0.251:5353"), []byte("x"))
	if s.Outbound(b[:n]) == nil {
		t.Fatal("multicast sent to a peer")
	}
	sent = nil
	n, _ = packet.BuildUDP(b, netip.AddrPortFrom(addrA4.Addr(), 5000), netip.AddrPortFrom(addrB4.Addr(), 9), []byte("x"))
	if err := s.Outbound(b[:n]); err != nil || len(sent) != 1 {
		t.Fatalf("Outbound: %v, %d sent", err, len(sent))
	}
}

// TestForwardAllocs: forwarding a packet and sending one from the host
// allocate nothing.
func TestForwardAllocs(t *testing.T) {
	var peer key.NodePublic
	s := New(Config{Output: func(p []byte) error { return nil }})
	defer s.Close()
	s.SetAddresses([]netip.Prefix{addrA4})
	s.SetFilter(packet.NewFilter([]packet.Rule{{Srcs: []netip.Prefix{addrB4}, Dsts: []packet.PortRange{{Net: addrA4, Last: 65535}}}}, []netip.Prefix{addrA4}))
	s.SetForwarder(&Forwarder{All: true, Deliver: func([]byte) {}})
	in := make([]byte, 1280)
	n, _ := packet.BuildUDP(in, netip.AddrPortFrom(addrB4.Addr(), 1000), netip.AddrPortFrom(addrA4.Addr(), 53), make([]byte, 1000))
	in = in[:n]
	out := make([]byte, 1280)
	m, _ := packet.BuildUDP(out, netip.AddrPortFrom(addrA4.Addr(), 53), netip.AddrPortFrom(addrB4.Addr(), 1000), make([]byte, 1000))
	out = out[:m]
	if a := testing.AllocsPerRun(200, func() {
		s.Inbound(peer, in)
		s.Outbound(out)
	}); a != 0 {
		t.Fatalf("%v allocations per forwarded packet and host packet", a)
	}
}
