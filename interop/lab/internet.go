package lab

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
)

// InternetAddr is where tests that build networks of namespaces put the
// lab's servers (Options.ListenAddr): on the loopback interface of the
// test's own namespace, which SetupInternet makes the internet.
var InternetAddr = netip.MustParseAddr("198.18.0.1")

var (
	internetOnce sync.Once
	internetErr  error
	hostSeq      atomic.Int32 // numbers internet hosts: 198.18.N.0/24
	lanSeq       atomic.Int32 // numbers LANs: 198.19.N.0/24
)

// SetupInternet makes the test's own namespace (that of RunInNetns) the
// internet: it holds InternetAddr and forwards between the hosts joined
// to it.
func SetupInternet(t T) {
	t.Helper()
	internetOnce.Do(func() {
		out, err := NetnsCommand("", "ip", "addr", "add", InternetAddr.String()+"/32", "dev", "lo").CombinedOutput()
		if err != nil && !bytes.Contains(out, []byte("exists")) {
			internetErr = fmt.Errorf("ip addr add %v dev lo: %v: %s", InternetAddr, err, out)
			return
		}
		internetErr = os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644)
	})
	if internetErr != nil {
		t.Fatalf("%v", internetErr)
	}
}

// Host is a network namespace with one address.
type Host struct {
	NS   string
	Addr netip.Addr
}

// NewInternetHost creates a namespace joined to the internet by a veth
// pair: it holds 198.18.N.2 on eth0 and routes everything through
// 198.18.N.1, the internet's end.
func NewInternetHost(t T, label string) *Host {
	t.Helper()
	SetupInternet(t)
	n := int(hostSeq.Add(1))
	if n > 250 {
		t.Fatalf("lab: too many internet hosts")
	}
	h := &Host{NS: NewNetns(t, label), Addr: netip.AddrFrom4([4]byte{198, 18, byte(n), 2})}
	gw := netip.AddrFrom4([4]byte{198, 18, byte(n), 1})
	Veth(t, "", fmt.Sprintf("i%d", n), netip.PrefixFrom(gw, 24), h.NS, "eth0", netip.PrefixFrom(h.Addr, 24))
	MustRun(t, h.NS, "ip", "route", "add", "default", "via", gw.String())
	return h
}

// LAN is a network behind a router namespace: the router's interface
// lan0 holds 198.19.N.1 and its host 198.19.N.2.
type LAN struct {
	Prefix netip.Prefix
	Router string // namespace
	hosts  int
}

// NewLAN makes a new LAN for the router namespace; NewHost attaches its
// host.
func NewLAN(t T, router string) *LAN {
	t.Helper()
	n := int(lanSeq.Add(1))
	if n > 199 {
		t.Fatalf("lab: too many LANs")
	}
	return &LAN{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 19, byte(n), 0}), 24), Router: router}
}

// Gateway is the router's address on the LAN.
func (l *LAN) Gateway() netip.Addr { return l.Prefix.Addr().Next() }

// NewHost adds the LAN's host, a namespace joined to the router by a veth
// pair. It has no routes beyond the LAN's own: tests add what they need.
func (l *LAN) NewHost(t T, label string) *Host {
	t.Helper()
	if l.hosts > 0 {
		t.Fatalf("lab: one host per LAN")
	}
	l.hosts++
	h := &Host{NS: NewNetns(t, label), Addr: l.Gateway().Next()}
	Veth(t, l.Router, "lan0", netip.PrefixFrom(l.Gateway(), 24), h.NS, "eth0", netip.PrefixFrom(h.Addr, 24))
	return h
}
