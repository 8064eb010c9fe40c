package nattest

import (
	"context"
	"net/http"
	"net/netip"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/microlink-go/microlink/interop/lab"
	"tailscale.com/ipn/ipnstate"
	"tailscale.com/types/key"
)

// TestRebindAfterAddressChange runs the microlink command ("microlink up")
// behind one NAT and a real tailscaled behind another. After a direct
// path is up, microlink's host gets a new LAN address (the old one is
// removed, a new one added) and the daemon gets SIGHUP. The old NAT
// mappings now lead nowhere and the daemon's TCP connections to DERP and
// control are dead. tailscaled reaches microlink again, and microlink
// kept its identity: same node key, same tailnet address, no new node at
// control, no registration in its log. "microlink status" shows the path
// and a latency, and the local API's POST /rebind works as SIGHUP does.
func TestRebindAfterAddressChange(t *testing.T) {
	needNetwork(t)
	a, b := newSite(t, "ra", natEIM), newSite(t, "rb", natEIM)
	tsHost, mlHost := b.newHost(t, "ts"), a.newHost(t, "ml")
	l := startLab(t)
	ts := l.StartTailscaled(t, lab.TSOptions{Hostname: tsName, TUN: true, Netns: tsHost.NS})
	d := startDaemon(t, l, mlHost.NS, mlName)
	before, err := d.status()
	if err != nil {
		t.Fatal(err)
	}
	mlIP := netip.MustParseAddr(before.Self.Addresses[0])
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if _, err := ts.WaitStatus(ctx, func(st *ipnstate.Status) bool {
		p := lab.FindPeer(st, mlName)
		return p != nil && p.Relay != ""
	}); err != nil {
		t.Fatalf("tailscaled never learned microlink's home relay: %v", err)
	}

	// waitDirect pings both ways until tailscaled reaches microlink
	// directly at addr and microlink's status shows a direct path to
	// tailscaled's NAT.
	waitDirect := func(addr netip.Addr, within time.Duration) {
		t.Helper()
		start := time.Now()
		var last string
		for time.Since(start) < within {
			pctx, pcancel := context.WithTimeout(ctx, 3*time.Second)
			ts.Ping(pctx, mlIP, "TSMP")
			d.cli("ping", "--tsmp", "-c", "1", "--timeout", "2s", tsName)
			res, err := ts.Ping(pctx, mlIP, "disco")
			pcancel()
			switch {
			case err != nil:
				last = "tailscaled disco ping: " + err.Error()
			case res.Endpoint == "":
				last = "tailscaled disco ping went via DERP"
			case netip.MustParseAddrPort(res.Endpoint).Addr() != addr:
				last = "tailscaled disco ping went via " + res.Endpoint
			default:
				out, err := d.cli("status")
				line := statusLine(out, tsName)
				if err == nil && strings.Contains(line, "direct "+b.WAN.String()+":") {
					return
				}
				last = "microlink status: " + out
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Fatalf("no direct path to %v within %v: %s", addr, within, last)
	}
	waitDirect(a.WAN, 25*time.Second)
	out, _ := d.cli("status")
	t.Logf("microlink status:\n%s", out)
	if !regexp.MustCompile(`direct 198\.18\.\d+\.2:\d+\s+\d+\.\d+ms`).MatchString(statusLine(out, tsName)) {
		t.Fatalf("microlink status does not show a direct path with a latency:\n%s", out)
	}

	nodes := len(l.Control.AllNodes())
	mark := d.logs.Len()
	oldAddr := mlHost.Addr
	mlHost.renumber(t, 20)
	t.Logf("moved microlink's host from %v to %v; SIGHUP", oldAddr, mlHost.Addr)
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the daemon to log the rebind", func() bool {
		return strings.Contains(d.logs.since(mark), "rebound")
	})
	rebound := time.Now()

	// Control learns the new endpoints at once: the lite update goes over a
	// fresh connection, not the one that died with the old address.
	var mlKey key.NodePublic
	if err := mlKey.UnmarshalText([]byte(before.Self.NodeKey)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "control to learn microlink's new local endpoint", func() bool {
		return controlHasEndpoint(l, mlKey, mlHost.Addr)
	})
	t.Logf("control has the new endpoints %v after the rebind", time.Since(rebound).Round(time.Millisecond))
	// The map poll moved to a new connection at once too: a new stream
	// starts with a full netmap.
	maps := before.Stats.MapUpdates
	waitFor(t, 5*time.Second, "a new map stream after the rebind", func() bool {
		st, err := d.status()
		return err == nil && st.Stats.MapUpdates > maps
	})

	// tailscaled reaches microlink again, through DERP: the NATs' old
	// mappings still hold the ports the new ones would need.
	waitFor(t, 15*time.Second, "tailscaled's TSMP ping of microlink after the rebind", func() bool {
		pctx, pcancel := context.WithTimeout(ctx, time.Second)
		defer pcancel()
		_, err := ts.Ping(pctx, mlIP, "TSMP")
		return err == nil
	})
	// tailscaled keeps sending to the old, trusted address for up to 6.5 s
	// after its last pong before it adds DERP.
	t.Logf("reachable again %v after the rebind", time.Since(rebound).Round(time.Millisecond))
	pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
	if out, err := lab.Command(pctx, "ip", "netns", "exec", tsHost.NS, "ping", "-c", "2", "-W", "3", mlIP.String()).CombinedOutput(); err != nil {
		t.Fatalf("OS ping of microlink after the rebind: %v\n%s", err, out)
	}
	pcancel()
	if out, err := d.cli("ping", "--tsmp", "-c", "1", tsName); err != nil || !strings.Contains(out, "pong from "+tsName) {
		t.Fatalf("microlink ping of tailscaled after the rebind: %v\n%s", err, out)
	}

	after, err := d.status()
	if err != nil {
		t.Fatal(err)
	}
	if after.Self.NodeKey != before.Self.NodeKey || after.Self.Addresses[0] != before.Self.Addresses[0] {
		t.Fatalf("identity changed: node key %s → %s, address %s → %s",
			before.Self.NodeKey, after.Self.NodeKey, before.Self.Addresses[0], after.Self.Addresses[0])
	}
	if n := len(l.Control.AllNodes()); n != nodes {
		t.Fatalf("control has %d nodes after the rebind, %d before", n, nodes)
	}
	if n := after.Stats.RegisterRequests; n != 1 {
		t.Fatalf("%d register requests, want only the first login", n)
	}
	if log := d.logs.since(mark); regexp.MustCompile(`(?i)registered|new identity|rotating|state=(NeedsLogin|Connecting)`).MatchString(log) {
		t.Fatalf("the daemon registered again after the rebind:\n%s", log)
	}
	out, _ = d.cli("status")
	t.Logf("microlink status after the rebind:\n%s", out)
	if !regexp.MustCompile(`(direct 198\.18\.\d+\.2:\d+|DERP\(900\))\s`).MatchString(statusLine(out, tsName)) {
		t.Fatalf("microlink status does not show the path:\n%s", out)
	}

	// The local API's rebind does the same, without an address change.
	mark = d.logs.Len()
	if code, err := d.localAPI("POST", "/rebind"); err != nil || code != http.StatusNoContent {
		t.Fatalf("POST /rebind: %d, %v", code, err)
	}
	waitFor(t, 5*time.Second, "the daemon to log the second rebind", func() bool {
		return strings.Contains(d.logs.since(mark), "rebound")
	})
	waitFor(t, 15*time.Second, "tailscaled's TSMP ping of microlink after the second rebind", func() bool {
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		defer pcancel()
		_, err := ts.Ping(pctx, mlIP, "TSMP")
		return err == nil
	})
}
