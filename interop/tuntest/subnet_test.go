package tuntest

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/microlink-go/microlink/interop/lab"
	"tailscale.com/ipn/ipnstate"
	"tailscale.com/types/key"
)

// subnetSetup is a microlink subnet router with a LAN behind it and a
// real tailscaled that accepts its routes.
type subnetSetup struct {
	lab    *lab.Lab
	router *lab.Daemon
	rHost  *host // the router's namespace
	lan    *lan
	lanH   *host // the host on the LAN
	ts     *lab.Tailscaled
	tsHost *host
}

// approve has the lab's control server approve routes for the daemon.
func approve(t *testing.T, l *lab.Lab, d *lab.Daemon, routes ...netip.Prefix) {
	t.Helper()
	st, err := d.Status()
	if err != nil {
		t.Fatal(err)
	}
	var k key.NodePublic
	if err := k.UnmarshalText([]byte(st.Self.NodeKey)); err != nil {
		t.Fatalf("node key %q: %v", st.Self.NodeKey, err)
	}
	l.Control.SetSubnetRoutes(k, routes)
}

// startSubnet starts a microlink subnet router for a new LAN, with the
// given extra flags, and a tailscaled with --accept-routes; control
// approves the route, and the test waits until tailscaled uses it.
func startSubnet(t *testing.T, routerArgs ...string) *subnetSetup {
	t.Helper()
	return startSubnetAs(t, 0, routerArgs...)
}

// startSubnetAs is startSubnet with the router running as user uid (0
// for root).
func startSubnetAs(t *testing.T, uid int, routerArgs ...string) *subnetSetup {
	t.Helper()
	needNetwork(t)
	s := &subnetSetup{lab: startLab(t), rHost: newHost(t, "rt"), tsHost: newHost(t, "ts")}
	s.lan = newLAN(t, s.rHost.NS)
	s.lanH = s.lan.NewHost(t, "lan")
	if uid != 0 {
		// Unprivileged ICMP sockets for the router's user.
		lab.MustRun(t, s.rHost.NS, "sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647")
	}
	s.router = lab.StartDaemon(t, lab.DaemonOptions{Hostname: "ml-router", ControlURL: s.lab.ControlURL, AuthKey: s.lab.AuthKey,
		Netns: s.rHost.NS, UID: uid, Args: append([]string{"--advertise-routes=" + s.lan.Prefix.String()}, routerArgs...)})
	s.ts = s.lab.StartTailscaled(t, lab.TSOptions{Hostname: tsName, TUN: true, Netns: s.tsHost.NS, UpArgs: []string{"--accept-routes"}})
	approve(t, s.lab, s.router, s.lan.Prefix)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if _, err := s.ts.WaitStatus(ctx, func(st *ipnstate.Status) bool {
		p := lab.FindPeer(st, "ml-router")
		return p != nil && p.PrimaryRoutes != nil && slices.Contains(p.PrimaryRoutes.AsSlice(), s.lan.Prefix) && p.Relay != ""
	}); err != nil {
		t.Fatalf("tailscaled never took the route %v through microlink: %v", s.lan.Prefix, err)
	}
	waitFor(t, 10*time.Second, "microlink to see its route approved", func() bool {
		st, err := s.router.Status()
		return err == nil && slices.Contains(st.Self.ApprovedRoutes, s.lan.Prefix.String())
	})
	return s
}

// checkLAN has the real peer ping the LAN host and fetch 16 MiB from it,
// and checks the source address the LAN host sees.
func (s *subnetSetup) checkLAN(t *testing.T, wantSrc netip.Addr) {
	t.Helper()
	serveHTTP(t, listenIn(t, s.lanH.NS, netip.AddrPortFrom(s.lanH.Addr, 8080)), "lan")
	pingFrom(t, s.tsHost.NS, s.lanH.Addr, 10)
	client := httpClientIn(s.tsHost.NS)
	url := "http://" + netip.AddrPortFrom(s.lanH.Addr, 8080).String()
	who, err := get(client, url+"/whoami")
	if err != nil || !strings.HasPrefix(who, "lan "+wantSrc.String()+":") {
		t.Fatalf("the LAN host sees the real peer as %q (%v), want %v", who, err, wantSrc)
	}
	fetch(t, client, url+"/data")
}

// TestSubnetRouterTUN: a real tailscaled with --accept-routes reaches a
// host on the LAN behind microlink in TUN mode, which forwards in the
// kernel with SNAT (the LAN host needs no route back) and without it (it
// does).
func TestSubnetRouterTUN(t *testing.T) {
	t.Run("snat", func(t *testing.T) {
		s := startSubnet(t, "--tun")
		s.checkLAN(t, s.lan.Gateway())
		out := lab.MustRun(t, s.rHost.NS, "nft", "list", "table", "ip", "microlink")
		if !strings.Contains(out, `iifname "microlink0" oifname != "microlink0" masquerade`) {
			t.Fatalf("router's nftables:\n%s", out)
		}
		s.router.Stop()
		if st := stateOf(t, s.rHost.NS); !st.empty() {
			t.Fatalf("left after exit: %+v", st)
		}
		if out := lab.MustRun(t, s.rHost.NS, "sysctl", "-n", "net.ipv4.ip_forward"); strings.TrimSpace(out) != "0" {
			t.Fatalf("forwarding left on: %s", out)
		}
	})
	t.Run("no-snat", func(t *testing.T) {
		s := startSubnet(t, "--tun", "--snat-subnet-routes=false")
		lab.MustRun(t, s.lanH.NS, "ip", "route", "add", "100.64.0.0/10", "via", s.lan.Gateway().String())
		s.checkLAN(t, s.ts.IPv4())
		if out, _ := lab.NetnsCommand(s.rHost.NS, "nft", "list", "tables").CombinedOutput(); strings.Contains(string(out), "microlink") {
			t.Fatalf("SNAT rules without SNAT:\n%s", out)
		}
	})
}

// TestSubnetRouterUserspace: the same through microlink in userspace
// mode, running as an ordinary user in its namespace: it ends the real
// peer's TCP, UDP and ICMP echo in itself and carries them on through the
// host's own sockets, so the LAN host sees the router's address.
func TestSubnetRouterUserspace(t *testing.T) {
	s := startSubnetAs(t, 65534)
	s.checkLAN(t, s.lan.Gateway())
	go udpEcho(listenUDPIn(t, s.lanH.NS, netip.AddrPortFrom(s.lanH.Addr, 9000)))
	checkUDP(t, listenUDPIn(t, s.tsHost.NS, netip.AddrPortFrom(netip.IPv4Unspecified(), 0)), netip.AddrPortFrom(s.lanH.Addr, 9000))
	if out := lab.MustRun(t, s.rHost.NS, "ip", "link"); strings.Contains(out, "microlink0") {
		t.Fatalf("a userspace router made a TUN device:\n%s", out)
	}
}
