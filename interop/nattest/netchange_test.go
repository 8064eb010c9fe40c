package nattest

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/microlink-go/microlink/interop/lab"
	"tailscale.com/ipn/ipnstate"
	"tailscale.com/types/key"
)

// publicHost is a namespace on the internet itself, as a router's WAN
// side or a server is: a veth to the internet namespace, 198.18.N.2/24,
// default route through 198.18.N.1.
type publicHost struct {
	NS   string
	Addr netip.Addr
	n    int
}

func newPublicHost(t *testing.T, label string) *publicHost {
	t.Helper()
	setupInternet(t)
	n := int(siteSeq.Add(1))
	if n > 250 {
		t.Fatal("too many sites")
	}
	h := &publicHost{NS: newNetns(t, label), Addr: netip.AddrFrom4([4]byte{198, 18, byte(n), 2}), n: n}
	inet := fmt.Sprintf("i%d", n)
	run(t, "ip", "link", "add", inet, "type", "veth", "peer", "name", "eth0", "netns", h.NS)
	run(t, "ip", "addr", "add", fmt.Sprintf("198.18.%d.1/24", n), "dev", inet)
	run(t, "ip", "link", "set", inet, "up")
	run(t, "ip", "-n", h.NS, "addr", "add", h.Addr.String()+"/24", "dev", "eth0")
	run(t, "ip", "-n", h.NS, "link", "set", "eth0", "up")
	run(t, "ip", "-n", h.NS, "route", "add", "default", "via", fmt.Sprintf("198.18.%d.1", n))
	return h
}

// renumber gives the host a new address as a DHCP client would, in one
// burst: the old address goes (and the default route with it), the new
// one comes, then the route.
func (h *publicHost) renumber(t *testing.T, last byte) {
	t.Helper()
	old := h.Addr
	h.Addr = netip.AddrFrom4([4]byte{198, 18, byte(h.n), last})
	cmd := exec.Command("ip", "-n", h.NS, "-batch", "-")
	cmd.Stdin = strings.NewReader(fmt.Sprintf("addr del %s/24 dev eth0\naddr add %s/24 dev eth0\nroute add default via 198.18.%d.1\n",
		old, h.Addr, h.n))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("renumbering %s: %v\n%s", h.NS, err, out)
	}
}

// TestNetworkChangeWithoutSignal: the address of microlink's host changes
// and nobody tells the daemon. It notices by itself (netlink), rebinds,
// and control has its new endpoint within 5 s; tailscaled, behind a NAT,
// has a direct path to the new address within 10 s. The node registers no
// more, and keeps its identity.
func TestNetworkChangeWithoutSignal(t *testing.T) {
	needNetwork(t)
	site := newSite(t, "nb", natEIM)
	tsHost := site.newHost(t, "ts")
	mlHost := newPublicHost(t, "ml")
	l := startLab(t)
	ts := l.StartTailscaled(t, lab.TSOptions{Hostname: tsName, TUN: true, Netns: tsHost.NS})
	d := startDaemon(t, l, mlHost.NS, mlName)
	before, err := d.status()
	if err != nil {
		t.Fatal(err)
	}
	mlIP := netip.MustParseAddr(before.Self.Addresses[0])
	var mlKey key.NodePublic
	if err := mlKey.UnmarshalText([]byte(before.Self.NodeKey)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	if _, err := ts.WaitStatus(ctx, func(st *ipnstate.Status) bool {
		p := lab.FindPeer(st, mlName)
		return p != nil && p.Relay != ""
	}); err != nil {
		t.Fatalf("tailscaled never learned microlink's home relay: %v", err)
	}

	// directTo reports whether tailscaled's disco ping reaches microlink
	// directly at addr.
	directTo := func(addr netip.Addr) (bool, string) {
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		defer pcancel()
		res, err := ts.Ping(pctx, mlIP, "disco")
		switch {
		case err != nil:
			return false, "disco ping: " + err.Error()
		case res.Endpoint == "":
			return false, "disco ping went via DERP"
		case netip.MustParseAddrPort(res.Endpoint).Addr() != addr:
			return false, "disco ping went via " + res.Endpoint
		}
		return true, ""
	}
	waitDirect := func(addr netip.Addr, since time.Time, within time.Duration) time.Duration {
		t.Helper()
		var last string
		for time.Since(since) < within {
			ok, why := directTo(addr)
			if ok {
				return time.Since(since)
			}
			last = why
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("no direct path to %v within %v: %s", addr, within, last)
		return 0
	}
	waitDirect(mlHost.Addr, time.Now(), 30*time.Second)

	nodes := len(l.Control.AllNodes())
	registers := before.Stats.RegisterRequests
	mark := d.logs.Len()
	oldAddr := mlHost.Addr
	changed := time.Now()
	mlHost.renumber(t, 20)
	t.Logf("moved microlink's host from %v to %v; no signal", oldAddr, mlHost.Addr)

	waitFor(t, 5*time.Second, "control to learn microlink's new endpoint", func() bool {
		return controlHasEndpoint(l, mlKey, mlHost.Addr)
	})
	t.Logf("control has the new endpoint %v after the change", time.Since(changed).Round(time.Millisecond))
	if !strings.Contains(d.logs.since(mark), "network changed; rebinding") {
		t.Fatalf("the daemon did not log the network change:\n%s", d.logs.since(mark))
	}

	took := waitDirect(mlHost.Addr, changed, 10*time.Second)
	t.Logf("tailscaled has a direct path to the new address %v after the change", took.Round(time.Millisecond))
	if out, err := d.cli("ping", "--tsmp", "-c", "1", tsName); err != nil || !strings.Contains(out, "pong from "+tsName) {
		t.Fatalf("microlink ping of tailscaled after the change: %v\n%s", err, out)
	}

	after, err := d.status()
	if err != nil {
		t.Fatal(err)
	}
	if after.Stats.RegisterRequests != registers {
		t.Fatalf("%d register requests after the change, %d before", after.Stats.RegisterRequests, registers)
	}
	if after.Self.NodeKey != before.Self.NodeKey || after.Self.Addresses[0] != before.Self.Addresses[0] {
		t.Fatalf("identity changed: node key %s → %s, address %s → %s",
			before.Self.NodeKey, after.Self.NodeKey, before.Self.Addresses[0], after.Self.Addresses[0])
	}
	if n := len(l.Control.AllNodes()); n != nodes {
		t.Fatalf("control has %d nodes after the change, %d before", n, nodes)
	}
	// One change, one rebind: the burst of netlink events was debounced.
	if n := strings.Count(d.logs.since(mark), "network changed; rebinding"); n != 1 {
		t.Fatalf("%d rebinds for one change:\n%s", n, d.logs.since(mark))
	}
}
