package tunnel

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/microlink-go/microlink/internal/key"
	"github.com/microlink-go/microlink/internal/packet"
)

var (
	addrA4 = netip.MustParsePrefix("100.64.0.1/32")
	addrA6 = netip.MustParsePrefix("fd7a:115c:a1e0:ab12:4843:cd96:6240:1/128")
	addrB4 = netip.MustParsePrefix("100.64.0.2/32")
	addrB6 = netip.MustParsePrefix("fd7a:115c:a1e0:ab12:4843:cd96:6240:2/128")
)

// pair returns two stacks whose outputs feed each other directly, as two
// nodes joined by a perfect tunnel.
func pair(t *testing.T) (a, b *Stack) {
	t.Helper()
	var ka, kb key.NodePublic
	ka[0], kb[0] = 1, 2
	a = New(Config{Output: func(p []byte) error { b.Inbound(ka, p); return nil }})
	b = New(Config{Output: func(p []byte) error { a.Inbound(kb, p); return nil }})
	a.SetAddresses([]netip.Prefix{addrA6, addrA4})
	b.SetAddresses([]netip.Prefix{addrB4, addrB6})
	a.SetFilter(packet.AllowAll())
	b.SetFilter(packet.AllowAll())
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func TestAddressesIPv4First(t *testing.T) {
	a, _ := pair(t)
	if got := a.Addresses(); got[0] != addrA4.Addr() || got[1] != addrA6.Addr() {
		t.Fatalf("addresses = %v", got)
	}
}

func TestUDPRoundTrip(t *testing.T) {
	a, b := pair(t)
	for _, dst := range []netip.Addr{addrB4.Addr(), addrB6.Addr()} {
		ca, err := a.ListenUDP(0)
		if err != nil {
			t.Fatal(err)
		}
		cb, err := b.ListenUDP(9000)
		if err != nil {
			t.Fatal(err)
		}
		msg := []byte("hello over the tunnel")
		if _, err := ca.WriteTo(msg, net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, 9000))); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 100)
		cb.SetReadDeadline(time.Now().Add(time.Second))
		n, from, err := cb.ReadFrom(buf)
		if err != nil || !bytes.Equal(buf[:n], msg) {
			t.Fatalf("read %q from %v: %v", buf[:n], from, err)
		}
		fa := from.(*net.UDPAddr).AddrPort()
		if fa.Port() != ca.Port() || fa.Addr().Is4() != dst.Is4() {
			t.Fatalf("from = %v, want port %d of same family as %v", fa, ca.Port(), dst)
		}
		// And back to the sender.
		if _, err := cb.WriteTo([]byte("reply"), from); err != nil {
			t.Fatal(err)
		}
		ca.SetReadDeadline(time.Now().Add(time.Second))
		n, _, err = ca.ReadFrom(buf)
		if err != nil || string(buf[:n]) != "reply" {
			t.Fatalf("reply %q: %v", buf[:n], err)
		}
		ca.Close()
		cb.Close()
	}
}

func TestUDPPortInUseAndClosedPort(t *testing.T) {
	a, b := pair(t)
	c, err := b.ListenUDP(7)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.ListenUDP(7); err == nil {
		t.Fatal("second listener on the same port accepted")
	}
	c.Close()
	if _, err := b.ListenUDP(7); err != nil {
		t.Fatalf("port not released by Close: %v", err)
	}
	// A datagram to a port nobody listens on is dropped and counted.
	ca, _ := a.ListenUDP(0)
	before, _, _ := b.Counters()
	ca.WriteToUDPAddrPort([]byte("x"), netip.AddrPortFrom(addrB4.Addr(), 4444))
	if after, _, _ := b.Counters(); after != before+1 {
		t.Fatalf("dropped %d -> %d", before, after)
	}
}

func TestReadDeadlineAndClose(t *testing.T) {
	_, b := pair(t)
	c, _ := b.ListenUDP(0)
	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, _, err := c.ReadFrom(make([]byte, 10)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	c.SetReadDeadline(time.Time{})
	errc := make(chan error, 1)
	go func() { _, _, err := c.ReadFrom(make([]byte, 10)); errc <- err }()
	time.Sleep(10 * time.Millisecond)
	c.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("err = %v, want net.ErrClosed", err)
		}
	case <-time.After(time.Second):
		t.Fatal("Close did not wake the reader")
	}
}

func TestPings(t *testing.T) {
	a, b := pair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, dst := range []netip.Addr{addrB4.Addr(), addrB6.Addr()} {
		if _, err := a.PingTSMP(ctx, dst); err != nil {
			t.Errorf("TSMP %v: %v", dst, err)
		}
		if _, err := a.PingICMP(ctx, dst); err != nil {
			t.Errorf("ICMP %v: %v", dst, err)
		}
	}
	if _, _, replied := b.Counters(); replied != 4 {
		t.Fatalf("b replied %d times, want 4", replied)
	}
}

func TestPingUnanswered(t *testing.T) {
	a := New(Config{Output: func([]byte) error { return nil }})
	a.SetAddresses([]netip.Prefix{addrA4})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if _, err := a.PingTSMP(ctx, addrB4.Addr()); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	if _, err := a.PingICMP(ctx, addrB6.Addr()); err == nil {
		t.Fatal("ping with no IPv6 address of our own succeeded")
	}
}

func TestFilter(t *testing.T) {
	a, b := pair(t)
	rule, err := packet.ParseRule([]string{"*"}, []packet.Dst{{IP: "*", First: 9000, Last: 9000}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	b.SetFilter(packet.NewFilter([]packet.Rule{rule}, []netip.Prefix{addrB4, addrB6}))
	ok, _ := b.ListenUDP(9000)
	blocked, _ := b.ListenUDP(9001)
	ca, _ := a.ListenUDP(0)
	ca.WriteToUDPAddrPort([]byte("in"), netip.AddrPortFrom(addrB4.Addr(), 9000))
	ca.WriteToUDPAddrPort([]byte("out"), netip.AddrPortFrom(addrB4.Addr(), 9001))
	buf := make([]byte, 10)
	ok.SetReadDeadline(time.Now().Add(time.Second))
	if n, _, err := ok.ReadFrom(buf); err != nil || string(buf[:n]) != "in" {
		t.Fatalf("allowed port: %q %v", buf[:n], err)
	}
	blocked.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, _, err := blocked.ReadFrom(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("blocked port got a datagram: %v", err)
	}
	// A datagram b sent out opens the way back in for its flow.
	blocked.WriteToUDPAddrPort([]byte("q"), netip.AddrPortFrom(addrA4.Addr(), ca.Port()))
	if n, from, err := ca.ReadFromUDPAddrPort(buf); err != nil || string(buf[:n]) != "q" {
		t.Fatalf("query: %q %v", buf[:n], err)
	} else {
		ca.WriteToUDPAddrPort([]byte("answer"), from)
	}
	blocked.SetReadDeadline(time.Now().Add(time.Second))
	if n, _, err := blocked.ReadFrom(buf); err != nil || string(buf[:n]) != "answer" {
		t.Fatalf("reply to our own flow: %q %v", buf[:n], err)
	}
	// TSMP is answered before the filter, so a deny-all filter keeps it working.
	b.SetFilter(packet.DenyAll())
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := a.PingTSMP(ctx, addrB4.Addr()); err != nil {
		t.Fatalf("TSMP under deny-all: %v", err)
	}
}

func TestNotForUsDropped(t *testing.T) {
	_, b := pair(t)
	c, _ := b.ListenUDP(9000)
	buf := make([]byte, 100)
	n, _ := packet.BuildUDP(buf, netip.MustParseAddrPort("100.64.0.1:5"), netip.MustParseAddrPort("100.64.0.99:9000"), []byte("x"))
	b.Inbound(key.NodePublic{}, buf[:n])
	b.Inbound(key.NodePublic{}, []byte{0x45, 0, 1})
	if d, _, _ := b.Counters(); d != 2 {
		t.Fatalf("dropped = %d, want 2", d)
	}
	c.Close()
}

func TestDiscoKeyAdvertisement(t *testing.T) {
	var got key.DiscoPublic
	s := New(Config{Output: func([]byte) error { return nil }, OnDiscoKey: func(_ key.NodePublic, k key.DiscoPublic) { got = k }})
	s.SetAddresses([]netip.Prefix{addrB4})
	var want key.DiscoPublic
	want[5] = 9
	buf := make([]byte, 100)
	n, err := packet.BuildTSMPDiscoKey(buf, addrA4.Addr(), addrB4.Addr(), want)
	if err != nil {
		t.Fatal(err)
	}
	s.Inbound(key.NodePublic{}, buf[:n])
	if got != want {
		t.Fatalf("disco key = %v", got)
	}
}

func TestUDPHotPathAllocs(t *testing.T) {
	t.Run("no filter", func(t *testing.T) { testUDPAllocs(t, false) })
	t.Run("filter", func(t *testing.T) { testUDPAllocs(t, true) })
}

func testUDPAllocs(t *testing.T, filtered bool) {
	a, b := pair(t)
	if filtered {
		rule, _ := packet.ParseRule([]string{"100.64.0.0/10"}, []packet.Dst{{IP: "*", First: 1, Last: 65535}}, nil)
		a.SetFilter(packet.NewFilter([]packet.Rule{rule}, []netip.Prefix{addrA4}))
		b.SetFilter(packet.NewFilter([]packet.Rule{rule}, []netip.Prefix{addrB4}))
	}
	ca, _ := a.ListenUDP(0)
	cb, _ := b.ListenUDP(9000)
	dst := netip.AddrPortFrom(addrB4.Addr(), 9000)
	msg := make([]byte, 1000)
	buf := make([]byte, 1500)
	// Warm the buffer pools.
	for i := 0; i < 4; i++ {
		ca.WriteToUDPAddrPort(msg, dst)
		cb.ReadFromUDPAddrPort(buf)
	}
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := ca.WriteToUDPAddrPort(msg, dst); err != nil {
			t.Fatal(err)
		}
		if _, _, err := cb.ReadFromUDPAddrPort(buf); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per datagram, want 0", allocs)
	}
}

func TestOversizeRejected(t *testing.T) {
	a, _ := pair(t)
	c, _ := a.ListenUDP(0)
	if _, err := c.WriteToUDPAddrPort(make([]byte, MaxPacket), netip.AddrPortFrom(addrB4.Addr(), 1)); err == nil {
		t.Fatal("datagram larger than the MTU accepted")
	}
}

// TestDenyAllUntilFilter: a new stack lets nothing in until a filter is
// installed, and installing nil goes back to letting nothing in.
func TestDenyAllUntilFilter(t *testing.T) {
	var ka key.NodePublic
	b := New(Config{Output: func([]byte) error { return nil }})
	t.Cleanup(func() { b.Close() })
	b.SetAddresses([]netip.Prefix{addrB4})
	c, err := b.ListenUDP(9000)
	if err != nil {
		t.Fatal(err)
	}
	pkt := make([]byte, 100)
	n, err := packet.BuildUDP(pkt, netip.AddrPortFrom(addrA4.Addr(), 5), netip.AddrPortFrom(addrB4.Addr(), 9000), []byte("early"))
	if err != nil {
		t.Fatal(err)
	}
	echo := make([]byte, 100)
	en, err := packet.BuildEchoRequest(echo, addrA4.Addr(), addrB4.Addr(), 1, 1, []byte("ping"))
	if err != nil {
		t.Fatal(err)
	}
	deliver := func() (udp bool, replied uint64) {
		_, _, before := b.Counters()
		b.Inbound(ka, append([]byte(nil), pkt[:n]...))
		b.Inbound(ka, append([]byte(nil), echo[:en]...))
		_, _, after := b.Counters()
		c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		_, _, err := c.ReadFrom(make([]byte, 100))
		return err == nil, after - before
	}
	if udp, replied := deliver(); udp || replied != 0 {
		t.Fatalf("before any filter: UDP delivered %v, echo answered %d", udp, replied)
	}
	b.SetFilter(packet.AllowAll())
	if udp, replied := deliver(); !udp || replied != 1 {
		t.Fatalf("with an allow-all filter: UDP delivered %v, echo answered %d", udp, replied)
	}
	b.SetFilter(nil)
	if udp, replied := deliver(); udp || replied != 0 {
		t.Fatalf("after SetFilter(nil): UDP delivered %v, echo answered %d", udp, replied)
	}
}

// TestFragmentsDropped: fragments, first ones included, are dropped: a
// first fragment is never delivered as a whole, truncated datagram, and
// an echo request split in fragments is not answered.
func TestFragmentsDropped(t *testing.T) {
	_, b := pair(t)
	var ka key.NodePublic
	c, err := b.ListenUDP(9000)
	if err != nil {
		t.Fatal(err)
	}
	build := func(v6 bool, echoReq bool) []byte {
		src, dst := addrA4.Addr(), addrB4.Addr()
		if v6 {
			src, dst = addrA6.Addr(), addrB6.Addr()
		}
		buf := make([]byte, 300)
		var n int
		var err error
		if echoReq {
			n, err = packet.BuildEchoRequest(buf, src, dst, 1, 1, make([]byte, 200))
		} else {
			n, err = packet.BuildUDP(buf, netip.AddrPortFrom(src, 5), netip.AddrPortFrom(dst, 9000), make([]byte, 200))
		}
		if err != nil {
			t.Fatal(err)
		}
		return firstFragment(t, buf[:n], 104)
	}
	for _, v6 := range []bool{false, true} {
		for _, echoReq := range []bool{false, true} {
			_, _, before := b.Counters()
			b.Inbound(ka, build(v6, echoReq))
			if _, _, after := b.Counters(); after != before {
				t.Errorf("v6 %v: fragmented echo request answered", v6)
			}
			c.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
			if n, _, err := c.ReadFrom(make([]byte, 300)); err == nil {
				t.Errorf("v6 %v: first fragment delivered as a %d-byte datagram", v6, n)
			}
		}
	}
}

// firstFragment cuts the unfragmented IP packet pkt to its first fragment,
// carrying the first n bytes (a multiple of 8) after the IP header.
func firstFragment(t testing.TB, pkt []byte, n int) []byte {
	t.Helper()
	if pkt[0]>>4 == 4 {
		hl := int(pkt[0]&0x0f) * 4
		out := append([]byte(nil), pkt[:hl+n]...)
		binary.BigEndian.PutUint16(out[2:], uint16(hl+n))
		out[6] |= 0x20 // more fragments, offset 0
		out[10], out[11] = 0, 0
		binary.BigEndian.PutUint16(out[10:], packet.Checksum(out[:hl]))
		return out
	}
	// IPv6: insert a fragment header after the fixed header.
	out := append([]byte(nil), pkt[:40]...)
	frag := []byte{out[6], 0, 0, 1, 0, 0, 0, 7} // next header, offset 0, more fragments, id 7
	out[6] = 44
	out = append(out, frag...)
	out = append(out, pkt[40:40+n]...)
	binary.BigEndian.PutUint16(out[4:], uint16(8+n))
	return out
}

// FuzzInbound feeds arbitrary packets to a stack that lets everything in
// and listens on a UDP port: it never panics, and a datagram it delivers
// is exactly as long as its UDP header says.
func FuzzInbound(f *testing.F) {
	for _, frag := range []bool{false, true} {
		buf := make([]byte, 300)
		n, _ := packet.BuildUDP(buf, netip.AddrPortFrom(addrA4.Addr(), 5), netip.AddrPortFrom(addrB4.Addr(), 9000), make([]byte, 200))
		if frag {
			f.Add(firstFragment(f, buf[:n], 104))
		} else {
			f.Add(buf[:n])
		}
		n, _ = packet.BuildUDP(buf, netip.AddrPortFrom(addrA6.Addr(), 5), netip.AddrPortFrom(addrB6.Addr(), 9000), make([]byte, 100))
		if frag {
			f.Add(firstFragment(f, buf[:n], 48))
		} else {
			f.Add(buf[:n])
		}
	}
	buf := make([]byte, 200)
	n, _ := packet.BuildTSMPPing(buf, addrA4.Addr(), addrB4.Addr(), [8]byte{1})
	f.Add(append([]byte(nil), buf[:n]...))
	n, _ = packet.BuildEchoRequest(buf, addrA6.Addr(), addrB6.Addr(), 1, 2, []byte("p"))
	f.Add(append([]byte(nil), buf[:n]...))
	s := New(Config{Output: func([]byte) error { return nil }})
	s.SetAddresses([]netip.Prefix{addrB4, addrB6})
	s.SetFilter(packet.AllowAll())
	c, err := s.ListenUDP(9000)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	var ka key.NodePublic
	f.Fuzz(func(t *testing.T, pkt []byte) {
		s.Inbound(ka, append([]byte(nil), pkt...))
		var n int
		select {
		case d := <-c.queue:
			n = d.n
			s.pool.Put(d.buf)
		default:
			return
		}
		var p packet.Parsed
		if p.Decode(pkt) != nil || p.IsFragment() || len(p.Transport()) < 8 {
			t.Fatalf("delivered %d bytes from a packet that is not a whole datagram", n)
		}
		if want := int(p.Transport()[4])<<8 | int(p.Transport()[5]) - 8; n != want {
			t.Fatalf("delivered %d bytes, the UDP header says %d", n, want)
		}
	})
}
