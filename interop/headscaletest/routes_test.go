package headscaletest

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/microlink-go/microlink/interop/lab"
	"tailscale.com/ipn/ipnstate"
)

// TestHeadscaleSubnetRouter: microlink advertises its LAN to Headscale,
// which approves the route ("headscale nodes approve-routes"); a real
// tailscaled with --accept-routes then pings the LAN host and fetches
// 16 MiB from it, through microlink in TUN mode and in userspace mode
// (as an ordinary user).
func TestHeadscaleSubnetRouter(t *testing.T) {
	if os.Geteuid() != 0 || lab.TUNAvailable() != nil {
		t.Skip("needs root and TUN mode for namespaces and the real peer")
	}
	for _, c := range []string{"nft", "ping", "setpriv"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Skipf("needs the %s command", c)
		}
	}
	lab.SetupInternet(t)
	l := lab.Start(t, lab.Options{ListenAddr: lab.InternetAddr})
	hs := startHeadscale(t, l)
	key := hs.preAuthKey(t, hs.createUser(t, "lab"))
	th := lab.NewInternetHost(t, "ts")
	ts := l.StartTailscaled(t, lab.TSOptions{Hostname: peerName, TUN: true, Netns: th.NS,
		ControlURL: hs.URL, AuthKey: key, UpArgs: []string{"--accept-routes"}})

	for _, tc := range []struct {
		name string
		uid  int
		args []string
	}{{"tun", 0, []string{"--tun"}}, {"userspace", 65534, nil}} {
		t.Run(tc.name, func(t *testing.T) {
			rh := lab.NewInternetHost(t, "rt")
			lan := lab.NewLAN(t, rh.NS)
			lh := lan.NewHost(t, "lan")
			if tc.uid != 0 {
				lab.MustRun(t, rh.NS, "sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647")
			}
			name := "ml-router-" + tc.name
			d := lab.StartDaemon(t, lab.DaemonOptions{Hostname: name, ControlURL: hs.URL, AuthKey: key, Netns: rh.NS, UID: tc.uid,
				Args: append(tc.args, "--advertise-routes="+lan.Prefix.String())})
			var id uint64
			waitFor(t, 15*time.Second, "the router in headscale", func() bool {
				for _, n := range hs.nodes(t) {
					if n.Name == name {
						id = n.ID
						return true
					}
				}
				return false
			})
			var approved any
			hs.cliJSON(t, &approved, "nodes", "approve-routes", "-i", strconv.FormatUint(id, 10), "-r", lan.Prefix.String())

			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if _, err := ts.WaitStatus(ctx, func(st *ipnstate.Status) bool {
				p := lab.FindPeer(st, name)
				return p != nil && p.PrimaryRoutes != nil && slices.Contains(p.PrimaryRoutes.AsSlice(), lan.Prefix)
			}); err != nil {
				t.Fatalf("tailscaled never took the route %v through microlink: %v", lan.Prefix, err)
			}
			waitFor(t, 15*time.Second, "microlink to see its route approved", func() bool {
				st, err := d.Status()
				return err == nil && slices.Contains(st.Self.ApprovedRoutes, lan.Prefix.String())
			})
			lab.ServeHTTP(t, lab.ListenTCPIn(t, lh.NS, netip.AddrPortFrom(lh.Addr, 8080)), "lan")
			lab.PingFrom(t, th.NS, lh.Addr, 10)
			client := lab.HTTPClientIn(th.NS)
			url := "http://" + netip.AddrPortFrom(lh.Addr, 8080).String()
			// The LAN host needs no route back: both modes give the
			// traffic the router's own address.
			if who, err := lab.Get(client, url+"/whoami"); err != nil || !strings.HasPrefix(who, "lan "+lan.Gateway().String()+":") {
				t.Fatalf("the LAN host sees the real peer as %q (%v), want %v", who, err, lan.Gateway())
			}
			lab.Fetch(t, client, url+"/data")
		})
	}
}
