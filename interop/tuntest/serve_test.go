package tuntest

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/microlink-go/microlink/interop/lab"
	"tailscale.com/ipn/ipnstate"
)

// exitSide builds, behind namespace router, the exit LAN with a host that
// holds the internet host's address a hop further, and serves HTTP there
// answering name.
func exitSide(t *testing.T, router, name string) {
	t.Helper()
	lanNS := lab.NewNetns(t, "inet")
	lanHost := exitLAN.Addr().Next().Next()
	lab.Veth(t, router, "lan0", netip.PrefixFrom(exitLAN.Addr().Next(), 24), lanNS, "eth0", netip.PrefixFrom(lanHost, 24))
	lab.MustRun(t, lanNS, "ip", "addr", "add", internetHost.String()+"/32", "dev", "lo")
	lab.MustRun(t, router, "ip", "route", "add", internetHost.String()+"/32", "via", lanHost.String())
	serveHTTP(t, listenIn(t, lanNS, netip.AddrPortFrom(internetHost, 80)), name)
}

// TestExitNodeServing: a real tailscaled uses microlink, advertised with
// --advertise-exit-node and approved, as its exit node: its requests to
// the internet leave through microlink's host with that host's address,
// masqueraded in TUN mode and relayed through the host's sockets in
// userspace mode (as an ordinary user).
func TestExitNodeServing(t *testing.T) {
	t.Run("tun", func(t *testing.T) { testExitNodeServing(t, 0, "--tun") })
	t.Run("userspace", func(t *testing.T) { testExitNodeServing(t, 65534) })
}

func testExitNodeServing(t *testing.T, uid int, args ...string) {
	needNetwork(t)
	l := startLab(t)
	e := newHost(t, "mlexit")
	exitSide(t, e.NS, "behind-ml")
	d := lab.StartDaemon(t, lab.DaemonOptions{Hostname: "ml-exit", ControlURL: l.ControlURL, AuthKey: l.AuthKey, Netns: e.NS,
		UID: uid, Args: append(args, "--advertise-exit-node")})
	approve(t, l, d, netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0"))
	st, err := d.Status()
	if err != nil {
		t.Fatal(err)
	}
	mlIP, _ := addrs(st)

	th := newHost(t, "ts")
	ts := l.StartTailscaled(t, lab.TSOptions{Hostname: tsName, TUN: true, Netns: th.NS})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := ts.WaitStatus(ctx, func(st *ipnstate.Status) bool {
		p := lab.FindPeer(st, "ml-exit")
		return p != nil && p.ExitNodeOption
	}); err != nil {
		t.Fatalf("tailscaled never saw microlink as an exit node: %v", err)
	}
	if out, err := ts.CLI(ctx, "set", "--exit-node="+mlIP.String()); err != nil {
		t.Fatalf("tailscale set --exit-node: %v\n%s", err, out)
	}
	client := httpClientIn(th.NS)
	client.Timeout = 5 * time.Second
	var who string
	waitFor(t, 15*time.Second, "the internet host through microlink", func() bool {
		who, err = get(client, "http://"+internetHost.String()+"/whoami")
		return err == nil
	})
	if want := "behind-ml " + exitLAN.Addr().Next().String() + ":"; !strings.HasPrefix(who, want) {
		t.Fatalf("the internet host answered %q, want %q", who, want)
	}
	fetch(t, client, "http://"+internetHost.String()+"/data")
	// The tailnet's own addresses and the exit host's LAN stay closed to
	// exit traffic.
	noPingFrom(t, th.NS, exitLAN.Addr().Next().Next())
}
