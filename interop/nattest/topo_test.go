package nattest

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microlink-go/microlink/interop/lab"
)

// serverAddr is the internet address of the lab's servers, on the
// loopback interface of the test's own namespace.
var serverAddr = netip.MustParseAddr("198.18.0.1")

var (
	internetOnce sync.Once
	internetErr  error
	siteSeq      atomic.Int32 // numbers sites: 198.18.N.0/24 and 10.N.0.0/24
	nsSeq        atomic.Int32 // makes namespace names unique within the process
)

// run runs an OS command and fails the test if it fails.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// nft loads an nftables script into namespace ns ("" for the internet).
func nft(t *testing.T, ns, script string) {
	t.Helper()
	args := []string{"-f", "-"}
	name := "nft"
	if ns != "" {
		args = append([]string{"netns", "exec", ns, "nft"}, args...)
		name = "ip"
	}
	cmd := exec.Command(name, args...)
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft in %q: %v\n%s\n%s", ns, err, out, script)
	}
}

// setupInternet makes the test's own namespace the internet: the servers'
// address on loopback and forwarding between the sites' links.
func setupInternet(t *testing.T) {
	t.Helper()
	internetOnce.Do(func() {
		out, err := exec.Command("ip", "addr", "add", serverAddr.String()+"/32", "dev", "lo").CombinedOutput()
		if err != nil && !bytes.Contains(out, []byte("exists")) {
			internetErr = fmt.Errorf("ip addr add %v dev lo: %v: %s", serverAddr, err, out)
			return
		}
		internetErr = os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644)
	})
	if internetErr != nil {
		t.Fatalf("setting up the internet namespace: %v", internetErr)
	}
}

// newNetns creates a network namespace with loopback up, deleted when the
// test ends.
func newNetns(t *testing.T, label string) string {
	t.Helper()
	name := fmt.Sprintf("mlnat%d-%d%s", os.Getpid(), nsSeq.Add(1), label)
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "delete", name).CombinedOutput(); err != nil {
			t.Logf("ip netns delete %s: %v: %s", name, err, out)
		}
	})
	run(t, "ip", "-n", name, "link", "set", "lo", "up")
	return name
}

// NAT behaviours of a site's router.
const (
	// natEIM maps a LAN ip:port to the same public port whatever the
	// destination (endpoint-independent mapping), and lets in only
	// replies to what went out: Linux's plain masquerade.
	natEIM = "masquerade"
	// natEDM picks a new random public port for every destination
	// (endpoint-dependent mapping), the behaviour that defeats hole
	// punching.
	natEDM = "masquerade random"
)

// site is a router namespace on the internet with a LAN behind it.
type site struct {
	n      int
	Router string     // namespace of the router
	WAN    netip.Addr // the router's public address, 198.18.N.2
	hosts  int
}

// host is a namespace on a site's LAN.
type host struct {
	NS   string
	Addr netip.Addr // LAN address on eth0
	site *site
}

// newSite creates a router namespace linked to the internet, with a LAN
// bridge 10.N.0.1/24 and the given masquerade rule for traffic leaving
// through its WAN interface.
func newSite(t *testing.T, label, nat string) *site {
	t.Helper()
	setupInternet(t)
	n := int(siteSeq.Add(1))
	if n > 250 {
		t.Fatal("too many sites")
	}
	s := &site{n: n, Router: newNetns(t, label), WAN: netip.AddrFrom4([4]byte{198, 18, byte(n), 2})}
	inet := fmt.Sprintf("i%d", n)
	run(t, "ip", "link", "add", inet, "type", "veth", "peer", "name", "wan", "netns", s.Router)
	run(t, "ip", "addr", "add", fmt.Sprintf("198.18.%d.1/24", n), "dev", inet)
	run(t, "ip", "link", "set", inet, "up")
	r := func(args ...string) { t.Helper(); run(t, "ip", append([]string{"-n", s.Router}, args...)...) }
	r("addr", "add", s.WAN.String()+"/24", "dev", "wan")
	r("link", "set", "wan", "up")
	r("route", "add", "default", "via", fmt.Sprintf("198.18.%d.1", n))
	r("link", "add", "br0", "type", "bridge")
	r("addr", "add", fmt.Sprintf("10.%d.0.1/24", n), "dev", "br0")
	r("link", "set", "br0", "up")
	run(t, "ip", "netns", "exec", s.Router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	// Like a home router's firewall, the router drops unsolicited UDP
	// from the internet before conntrack commits an entry for it: such an
	// entry would hold the public port the LAN host's own later packets
	// to that sender need, and masquerade would give them another.
	// The counters show, when a test fails, what crossed the router.
	nft(t, s.Router, fmt.Sprintf(`table ip nat {
	chain post {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "wan" counter %s
	}
}
table ip nattest {
	chain input {
		type filter hook input priority filter; policy accept;
		iifname "wan" meta l4proto udp ct state new counter drop comment "unsolicited"
	}
	chain forward {
		type filter hook forward priority filter; policy accept;
		iifname "wan" meta l4proto udp counter comment "udp in"
		oifname "wan" meta l4proto udp counter comment "udp out"
	}
}
`, nat))
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := exec.Command("ip", "netns", "exec", s.Router, "nft", "list", "ruleset").CombinedOutput()
			t.Logf("nftables of router %s (WAN %v):\n%s", s.Router, s.WAN, out)
		}
	})
	return s
}

// newHost creates a namespace on the site's LAN with the next free
// address and a default route through the router.
func (s *site) newHost(t *testing.T, label string) *host {
	t.Helper()
	s.hosts++
	h := &host{NS: newNetns(t, label), Addr: netip.AddrFrom4([4]byte{10, byte(s.n), 0, byte(1 + s.hosts)}), site: s}
	lan := fmt.Sprintf("l%d", s.hosts)
	run(t, "ip", "-n", s.Router, "link", "add", lan, "type", "veth", "peer", "name", "eth0", "netns", h.NS)
	run(t, "ip", "-n", s.Router, "link", "set", lan, "master", "br0", "up")
	run(t, "ip", "-n", h.NS, "addr", "add", h.Addr.String()+"/24", "dev", "eth0")
	run(t, "ip", "-n", h.NS, "link", "set", "eth0", "up")
	run(t, "ip", "-n", h.NS, "route", "add", "default", "via", s.gateway().String())
	return h
}

func (s *site) gateway() netip.Addr { return netip.AddrFrom4([4]byte{10, byte(s.n), 0, 1}) }

// renumber moves the host to a new LAN address (last octet) as a DHCP
// renewal would: the old address goes away, a new one comes.
func (h *host) renumber(t *testing.T, last byte) {
	t.Helper()
	old := h.Addr
	h.Addr = netip.AddrFrom4([4]byte{10, byte(h.site.n), 0, last})
	run(t, "ip", "-n", h.NS, "addr", "del", old.String()+"/24", "dev", "eth0")
	run(t, "ip", "-n", h.NS, "addr", "add", h.Addr.String()+"/24", "dev", "eth0")
	run(t, "ip", "-n", h.NS, "route", "replace", "default", "via", h.site.gateway().String())
}

// cutUDP drops, in the internet, every UDP packet between the given
// public addresses, leaving STUN and DERP (to the servers) alone. The
// returned function lifts the cut; it also runs when the test ends.
func cutUDP(t *testing.T, a, b netip.Addr) (lift func()) {
	t.Helper()
	const table = "nattest_cut"
	nft(t, "", fmt.Sprintf(`table inet %s {
	chain forward {
		type filter hook forward priority filter; policy accept;
		ip saddr { %[2]s, %[3]s } ip daddr { %[2]s, %[3]s } meta l4proto udp counter drop
	}
}
`, table, a, b))
	var once sync.Once
	lift = func() {
		once.Do(func() {
			if out, err := exec.Command("nft", "delete", "table", "inet", table).CombinedOutput(); err != nil {
				t.Errorf("lifting the cut: %v: %s", err, out)
			}
		})
	}
	t.Cleanup(lift)
	return lift
}

// listenUDPIn opens an IPv4 UDP socket inside namespace ns, closed when
// the test ends.
func listenUDPIn(t *testing.T, ns string, laddr netip.AddrPort) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := lab.Within(ns, func() (err error) {
		c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(laddr))
		return err
	})
	if err != nil {
		t.Fatalf("UDP socket in %s: %v", ns, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// mappedPorts sends a datagram from one socket on host h to each of two
// servers on the internet and returns the public ip:port each saw: equal
// ports mean endpoint-independent mapping, different ones
// endpoint-dependent.
func (h *host) mappedPorts(t *testing.T) (a, b netip.AddrPort) {
	t.Helper()
	var seen [2]netip.AddrPort
	var servers [2]*net.UDPConn
	for i := range servers {
		c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(serverAddr, 0)))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		servers[i] = c
	}
	c := listenUDPIn(t, h.NS, netip.AddrPortFrom(netip.IPv4Unspecified(), 0))
	defer c.Close()
	for i, s := range servers {
		if _, err := c.WriteToUDPAddrPort([]byte("where am I"), s.LocalAddr().(*net.UDPAddr).AddrPort()); err != nil {
			t.Fatal(err)
		}
		s.SetReadDeadline(time.Now().Add(3 * time.Second))
		_, from, err := s.ReadFromUDPAddrPort(make([]byte, 64))
		if err != nil {
			t.Fatalf("probe from %s: %v", h.NS, err)
		}
		seen[i] = from
	}
	return seen[0], seen[1]
}

// checkNAT makes sure the site's router maps as the test expects.
func (h *host) checkNAT(t *testing.T, independent bool) {
	t.Helper()
	a, b := h.mappedPorts(t)
	if a.Addr() != h.site.WAN || b.Addr() != h.site.WAN {
		t.Fatalf("NAT of %s: seen as %v and %v, want %v", h.NS, a, b, h.site.WAN)
	}
	if (a.Port() == b.Port()) != independent {
		t.Fatalf("NAT of %s: one socket seen as %v and %v; want endpoint-independent mapping: %v", h.NS, a, b, independent)
	}
}
