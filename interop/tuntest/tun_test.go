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

const (
	tsName = "real-peer"
	mlName = "ml-tun"
)

// tunPair is a real tailscaled and "microlink up --tun", each in a host
// namespace of its own.
type tunPair struct {
	lab        *lab.Lab
	ts         *lab.Tailscaled
	ml         *lab.Daemon
	tsHost     *host
	mlHost     *host
	mlV4, mlV6 netip.Addr
}

// startTUNPair starts both and waits until each has the other in its
// netmap with a way to reach it.
func startTUNPair(t *testing.T, neverDirect bool, mlArgs ...string) *tunPair {
	t.Helper()
	needNetwork(t)
	p := &tunPair{lab: startLab(t), tsHost: newHost(t, "ts"), mlHost: newHost(t, "ml")}
	p.ts = p.lab.StartTailscaled(t, lab.TSOptions{Hostname: tsName, TUN: true, Netns: p.tsHost.NS, NeverDirect: neverDirect})
	p.ml = lab.StartDaemon(t, lab.DaemonOptions{Hostname: mlName, ControlURL: p.lab.ControlURL, AuthKey: p.lab.AuthKey,
		Netns: p.mlHost.NS, Args: append([]string{"--tun"}, mlArgs...)})
	waitFor(t, 10*time.Second, "tailscaled in microlink's netmap", func() bool {
		st, err := p.ml.Status()
		if err != nil {
			return false
		}
		_, ok := st.Peer(tsName)
		p.mlV4, p.mlV6 = addrs(st)
		return ok
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := p.ts.WaitStatus(ctx, func(st *ipnstate.Status) bool {
		peer := lab.FindPeer(st, mlName)
		return peer != nil && peer.Relay != ""
	}); err != nil {
		t.Fatalf("tailscaled never learned microlink's home relay: %v", err)
	}
	return p
}

// TestTUN: the host's own ping, TCP (HTTP, 16 MiB each way) and UDP reach
// a real tailscaled through microlink's TUN device, over IPv4 and IPv6,
// on a direct path and through DERP.
func TestTUN(t *testing.T) {
	for _, tc := range []struct {
		name        string
		neverDirect bool
	}{{"direct", false}, {"derp", true}} {
		t.Run(tc.name, func(t *testing.T) {
			p := startTUNPair(t, tc.neverDirect)
			st, err := p.ml.Status()
			if err != nil || st.Self.TUN != "microlink0" {
				t.Fatalf("status: TUN %q, %v", st.Self.TUN, err)
			}
			if out := lab.MustRun(t, p.mlHost.NS, "ip", "addr", "show", "dev", "microlink0"); !strings.Contains(out, p.mlV4.String()) || !strings.Contains(out, "mtu 1280") {
				t.Fatalf("microlink0:\n%s", out)
			}
			for _, dst := range []netip.Addr{p.ts.IPv4(), p.ts.IPv6()} {
				pingFrom(t, p.mlHost.NS, dst, 10)
			}
			for _, dst := range []netip.Addr{p.mlV4, p.mlV6} {
				pingFrom(t, p.tsHost.NS, dst, 10)
			}

			// HTTP both ways: a server on the microlink host fetched by
			// the real peer's host, and the other way round.
			serveHTTP(t, listenIn(t, p.mlHost.NS, netip.AddrPortFrom(netip.IPv6Unspecified(), 8080)), "ml")
			serveHTTP(t, listenIn(t, p.tsHost.NS, netip.AddrPortFrom(netip.IPv6Unspecified(), 8080)), "ts")
			tsClient, mlClient := httpClientIn(p.tsHost.NS), httpClientIn(p.mlHost.NS)
			fetch(t, tsClient, "http://"+netip.AddrPortFrom(p.mlV4, 8080).String()+"/data")
			fetch(t, mlClient, "http://"+netip.AddrPortFrom(p.ts.IPv6(), 8080).String()+"/data")
			if tc.name == "direct" {
				fetch(t, tsClient, "http://"+netip.AddrPortFrom(p.mlV6, 8080).String()+"/data")
				fetch(t, mlClient, "http://"+netip.AddrPortFrom(p.ts.IPv4(), 8080).String()+"/data")
			}
			who, err := get(tsClient, "http://"+netip.AddrPortFrom(p.mlV4, 8080).String()+"/whoami")
			if err != nil || !strings.HasPrefix(who, "ml "+p.ts.IPv4().String()+":") {
				t.Fatalf("the microlink host sees the real peer as %q (%v), want its tailnet address %v", who, err, p.ts.IPv4())
			}

			// UDP: echo servers on both hosts.
			go udpEcho(listenUDPIn(t, p.tsHost.NS, netip.AddrPortFrom(netip.IPv6Unspecified(), 9000)))
			go udpEcho(listenUDPIn(t, p.mlHost.NS, netip.AddrPortFrom(netip.IPv6Unspecified(), 9000)))
			mlSock := listenUDPIn(t, p.mlHost.NS, netip.AddrPortFrom(netip.IPv6Unspecified(), 0))
			tsSock := listenUDPIn(t, p.tsHost.NS, netip.AddrPortFrom(netip.IPv6Unspecified(), 0))
			checkUDP(t, mlSock, netip.AddrPortFrom(p.ts.IPv4(), 9000))
			checkUDP(t, mlSock, netip.AddrPortFrom(p.ts.IPv6(), 9000))
			checkUDP(t, tsSock, netip.AddrPortFrom(p.mlV4, 9000))
			checkUDP(t, tsSock, netip.AddrPortFrom(p.mlV6, 9000))

			// The path is the one the test asked for.
			st, _ = p.ml.Status()
			peer, _ := st.Peer(tsName)
			want := "direct"
			if tc.neverDirect {
				want = "derp"
			}
			if peer.Path != want {
				t.Fatalf("path to the real peer: %q, want %q", peer.Path, want)
			}
		})
	}
}
