package tun

import (
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/microlink-go/microlink/internal/netlink"
	"github.com/microlink-go/microlink/internal/netlink/nltest"
	"github.com/microlink-go/microlink/internal/packet"
)

func inNetns(t *testing.T, f func()) { nltest.InNetns(t, f) }

func testLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

var (
	self4 = netip.MustParsePrefix("100.64.0.5/32")
	self6 = netip.MustParsePrefix("fd7a:115c:a1e0::5/128")
	peer4 = netip.MustParseAddr("100.64.0.9")
)

func TestDeviceAndRouting(t *testing.T) {
	inNetns(t, func() {
		dev, err := Open("mltest0", DefaultMTU)
		if err != nil {
			t.Error(err)
			return
		}
		defer dev.Close()
		ifi, err := net.InterfaceByName("mltest0")
		if err != nil || ifi.MTU != DefaultMTU || ifi.Flags&net.FlagUp == 0 {
			t.Errorf("device: %+v, %v", ifi, err)
			return
		}
		host, err := NewHost(dev, testLogger())
		if err != nil {
			t.Error(err)
			return
		}
		want := Routing{
			Addrs:  []netip.Prefix{self4, self6},
			Routes: []netip.Prefix{netip.MustParsePrefix("100.64.0.0/10"), netip.MustParsePrefix("fd7a:115c:a1e0::/48"), netip.MustParsePrefix("0.0.0.0/0")},
			Bypass: []netip.Prefix{netip.MustParsePrefix("198.19.7.0/24")},
		}
		if err := host.Set(want); err != nil {
			t.Error(err)
			return
		}
		nl, _ := netlink.DialRoute()
		defer nl.Close()
		routes, _ := nl.Routes(Table)
		for _, p := range append(want.Routes, want.Bypass...) {
			if !slices.ContainsFunc(routes, func(r netlink.Route) bool { return r.Dst == p }) {
				t.Errorf("table %d lacks %v: %+v", Table, p, routes)
			}
		}
		addrs, _ := nl.Addrs(dev.Index())
		for _, a := range want.Addrs {
			if !slices.Contains(addrs, a) {
				t.Errorf("device addresses %v lack %v", addrs, a)
			}
		}
		checkRules(t, nl, 8)

		// A datagram to a peer comes out of the device, and a reply
		// written into it reaches the socket.
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: self4.Addr().AsSlice(), Port: 4000})
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		if _, err := c.WriteToUDPAddrPort([]byte("hello"), netip.AddrPortFrom(peer4, 9999)); err != nil {
			t.Error(err)
			return
		}
		buf := make([]byte, 2000)
		var p packet.Parsed
		for {
			n, err := readTimeout(dev, buf, 5*time.Second)
			if err != nil {
				t.Errorf("reading the device: %v", err)
				return
			}
			if p.Decode(buf[:n]) == nil && p.Proto == packet.ProtoUDP && p.Dst == peer4 {
				break // not IPv6 router solicitations and the like
			}
		}
		if string(p.Payload()) != "hello" || p.DstPort != 9999 || p.Src != self4.Addr() {
			t.Errorf("read %v:%d → %v:%d %q", p.Src, p.SrcPort, p.Dst, p.DstPort, p.Payload())
		}
		reply := make([]byte, 1280)
		n, err := packet.BuildUDP(reply, netip.AddrPortFrom(peer4, 9999), netip.AddrPortFrom(self4.Addr(), 4000), []byte("world"))
		if err != nil {
			t.Error(err)
			return
		}
		if _, err := dev.Write(reply[:n]); err != nil {
			t.Errorf("writing the device: %v", err)
			return
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		m, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil || string(buf[:m]) != "world" || from.Addr() != peer4 {
			t.Errorf("socket read %q from %v: %v", buf[:m], from, err)
		}

		// Fewer routes: the others go.
		want.Routes = want.Routes[:2]
		want.Bypass = nil
		if err := host.Set(want); err != nil {
			t.Error(err)
		}
		if routes, _ := nl.Routes(Table); len(routes) != 2 {
			t.Errorf("after shrinking: %+v", routes)
		}
		if err := host.Close(); err != nil {
			t.Errorf("closing: %v", err)
		}
		checkRules(t, nl, 0)
		if routes, _ := nl.Routes(Table); len(routes) != 0 {
			t.Errorf("routes left: %+v", routes)
		}
		dev.Close()
		waitGone(t, "mltest0")
	})
}

// TestCleanupAfterKill leaves the rules and routes of a run behind, as a
// killed process does, and checks that the next run removes them.
func TestCleanupAfterKill(t *testing.T) {
	inNetns(t, func() {
		dev, err := Open("mltest1", DefaultMTU)
		if err != nil {
			t.Error(err)
			return
		}
		host, err := NewHost(dev, testLogger())
		if err != nil {
			t.Error(err)
			return
		}
		host.Set(Routing{Addrs: []netip.Prefix{self4}, Routes: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}, Bypass: []netip.Prefix{netip.MustParsePrefix("198.19.7.0/24")}})
		host.nl.Close() // "killed": nothing removed
		dev.Close()
		waitGone(t, "mltest1")
		nl, _ := netlink.DialRoute()
		defer nl.Close()
		checkRules(t, nl, 8)
		if routes, _ := nl.Routes(Table); len(routes) != 1 { // the throw route outlives the device
			t.Errorf("left behind: %+v", routes)
		}

		dev, err = Open("mltest1", DefaultMTU)
		if err != nil {
			t.Error(err)
			return
		}
		defer dev.Close()
		host, err = NewHost(dev, testLogger())
		if err != nil {
			t.Error(err)
			return
		}
		checkRules(t, nl, 8) // the new run's own, once each
		if routes, _ := nl.Routes(Table); len(routes) != 0 {
			t.Errorf("not cleaned: %+v", routes)
		}
		host.Close()
		checkRules(t, nl, 0)
	})
}

// TestLeftoverDevice takes over a persistent device of the same name.
func TestLeftoverDevice(t *testing.T) {
	inNetns(t, func() {
		dev, err := Open("mltest2", DefaultMTU)
		if err != nil {
			t.Error(err)
			return
		}
		unix.IoctlSetInt(int(dev.f.Fd()), unix.TUNSETPERSIST, 1)
		nl, _ := netlink.DialRoute()
		defer nl.Close()
		nl.AddrAdd(dev.Index(), self4)
		dev.Close()
		if _, err := net.InterfaceByName("mltest2"); err != nil {
			t.Errorf("persistent device gone: %v", err)
			return
		}
		dev, err = Open("mltest2", DefaultMTU)
		if err != nil {
			t.Error(err)
			return
		}
		if !dev.Leftover {
			t.Error("leftover device not noticed")
		}
		if addrs, _ := nl.Addrs(dev.Index()); slices.Contains(addrs, self4) {
			t.Errorf("leftover addresses kept: %v", addrs)
		}
		dev.Close()
		waitGone(t, "mltest2")
	})
}

func TestValidName(t *testing.T) {
	for _, n := range []string{"microlink0", "a", "tun-1.2"} {
		if err := ValidName(n); err != nil {
			t.Errorf("%q: %v", n, err)
		}
	}
	for _, n := range []string{"", ".", "..", "a/b", "a b", "a:1", "sixteen-chars-xx", "é"} {
		if ValidName(n) == nil {
			t.Errorf("%q accepted", n)
		}
	}
}

func checkRules(t *testing.T, nl *netlink.Conn, want int) {
	t.Helper()
	n := 0
	for _, ipv6 := range []bool{false, true} {
		rs, err := nl.Rules(ipv6)
		if err != nil {
			t.Error(err)
		}
		for _, r := range rs {
			if r.Priority >= RulePriority && r.Priority <= RulePriority+60 {
				n++
			}
		}
	}
	if n != want {
		t.Errorf("%d rules of ours, want %d", n, want)
	}
}

func waitGone(t *testing.T, name string) {
	t.Helper()
	for range 100 {
		if _, err := net.InterfaceByName(name); err != nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("device %s still there", name)
}

// readTimeout reads the next packet from the device into b.
func readTimeout(d *Device, b []byte, timeout time.Duration) (int, error) {
	d.f.SetReadDeadline(time.Now().Add(timeout))
	defer d.f.SetReadDeadline(time.Time{})
	n := 0
	for n == 0 {
		if err := d.ReadPackets(func(pkt []byte) { n = copy(b, pkt) }); err != nil {
			return 0, err
		}
	}
	return n, nil
}
