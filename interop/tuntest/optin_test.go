package tuntest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/microlink-go/microlink"
	"github.com/microlink-go/microlink/interop/lab"
	"tailscale.com/types/key"
)

// internetHost is the address of a host on the internet behind each
// exit node: the same on both, so that only the answer tells which exit
// node carried a request. It is a hop beyond the exit node's own LAN
// (exitLAN), since an exit node does not let the tailnet into networks it
// is attached to unless it advertises them.
var (
	internetHost = netip.MustParseAddr("198.19.201.2")
	exitLAN      = netip.MustParsePrefix("198.19.200.0/24")
)

// tsRouter is a real tailscaled that routes for a network behind it: a
// subnet router or an exit node.
type tsRouter struct {
	ts    *lab.Tailscaled
	h     *host // the tailscaled's namespace
	lanNS string
	addr  netip.Addr // the host behind it
}

func tsKey(t *testing.T, ts *lab.Tailscaled) key.NodePublic {
	t.Helper()
	st, err := ts.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st.Self.PublicKey
}

// startTSRouter starts a real tailscaled named name in TUN mode that
// forwards (with masquerade, as the host's own NAT) to one host on a
// network behind it, lanNet (.1 the router, .2 the host), which serves
// HTTP answering name. upArgs advertise what it routes; control approves
// approved.
func startTSRouter(t *testing.T, l *lab.Lab, name string, lanNet netip.Prefix, upArgs []string, approved ...netip.Prefix) *tsRouter {
	t.Helper()
	r := &tsRouter{h: newHost(t, name), lanNS: lab.NewNetns(t, name+"L"), addr: lanNet.Addr().Next().Next()}
	lab.Veth(t, r.h.NS, "lan0", netip.PrefixFrom(lanNet.Addr().Next(), 24), r.lanNS, "eth0", netip.PrefixFrom(r.addr, 24))
	lab.MustRun(t, r.h.NS, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	script := `table ip tuntest_nat {
	chain post {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "lan0" masquerade
	}
}
`
	cmd := lab.NetnsCommand(r.h.NS, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft in %s: %v\n%s", r.h.NS, err, out)
	}
	serveHTTP(t, listenIn(t, r.lanNS, netip.AddrPortFrom(r.addr, 80)), name)
	r.ts = l.StartTailscaled(t, lab.TSOptions{Hostname: name, TUN: true, Netns: r.h.NS, UpArgs: upArgs})
	l.Control.SetSubnetRoutes(tsKey(t, r.ts), approved)
	return r
}

func startExitNode(t *testing.T, l *lab.Lab, name string) *tsRouter {
	t.Helper()
	r := startTSRouter(t, l, name, exitLAN, []string{"--advertise-exit-node"}, netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0"))
	lab.MustRun(t, r.lanNS, "ip", "addr", "add", internetHost.String()+"/32", "dev", "lo")
	lab.MustRun(t, r.h.NS, "ip", "route", "add", internetHost.String()+"/32", "via", r.addr.String())
	serveHTTP(t, listenIn(t, r.lanNS, netip.AddrPortFrom(internetHost, 80)), name)
	return r
}

// waitExitOption waits until the daemon sees peer offering exit routes.
func waitExitOption(t *testing.T, d *lab.Daemon, peer string) {
	t.Helper()
	waitFor(t, 15*time.Second, peer+" as an exit node option", func() bool {
		st, err := d.Status()
		if err != nil {
			return false
		}
		p, ok := st.Peer(peer)
		return ok && p.ExitNodeOption
	})
}

// TestExitNodeTUN: with --exit-node, the host's traffic to addresses
// outside the tailnet goes through the chosen exit node and no other,
// while the node's own control and relay traffic stays outside the
// tunnel; without it, such addresses are not reached through the
// tailnet at all. LAN access follows --exit-node-allow-lan-access.
func TestExitNodeTUN(t *testing.T) {
	needNetwork(t)
	l := startLab(t)
	startExitNode(t, l, "exit1")
	e2 := startExitNode(t, l, "exit2")
	h := newHost(t, "ml")
	gw := h.Addr.Prev() // the host's gateway: its LAN
	url := "http://" + internetHost.String() + "/whoami"
	client := httpClientIn(h.NS)
	client.Timeout = 5 * time.Second

	d := lab.StartDaemon(t, lab.DaemonOptions{Hostname: mlName, ControlURL: l.ControlURL, AuthKey: l.AuthKey, Netns: h.NS, Args: []string{"--tun"}})
	waitExitOption(t, d, "exit1")
	waitExitOption(t, d, "exit2")
	if who, err := get(client, url); err == nil {
		t.Fatalf("without an exit node the internet host answered: %q", who)
	}
	pingFrom(t, h.NS, gw, 3)
	d.Stop()

	for _, tc := range []struct {
		exit, want string
		lan        bool
	}{
		{"exit1", "exit1", false},
		{e2.ts.IPv4().String(), "exit2", true},
	} {
		args := []string{"--tun", "--exit-node=" + tc.exit}
		if tc.lan {
			args = append(args, "--exit-node-allow-lan-access")
		}
		d.Opts.Args = args
		d.Restart(t)
		var who string
		waitFor(t, 15*time.Second, "the internet host through "+tc.want, func() bool {
			var err error
			who, err = get(client, url)
			return err == nil
		})
		// The exit node masquerades: the internet host sees its LAN side.
		if !strings.HasPrefix(who, tc.want+" "+exitLAN.Addr().Next().String()+":") {
			t.Fatalf("through --exit-node=%s the internet host answered %q, want %s", tc.exit, who, tc.want)
		}
		st, err := d.Status()
		if err != nil || st.Self.ExitNode != tc.want || st.State != "Running" {
			t.Fatalf("status: exit node %q, state %s, %v", st.Self.ExitNode, st.State, err)
		}
		if p, _ := st.Peer(tc.want); !p.ExitNode {
			t.Fatalf("peer %s not marked as the exit node in use: %+v", tc.want, p)
		}
		// The node's own sockets bypass the tunnel: it reaches control
		// and the other peers (a ping through WireGuard needs both the
		// relay and a handshake).
		if out, err := d.CLI("ping", "--tsmp", "-c", "2", "exit1"); err != nil {
			t.Fatalf("microlink ping with an exit node in use: %v\n%s", err, out)
		}
		if tc.lan {
			pingFrom(t, h.NS, gw, 3)
		} else {
			noPingFrom(t, h.NS, gw)
		}
		if out := lab.MustRun(t, h.NS, "ip", "route", "get", internetHost.String()); !strings.Contains(out, "dev microlink0") {
			t.Fatalf("route to the internet host: %s", out)
		}
		if out := lab.MustRun(t, h.NS, "ip", "route", "get", internetHost.String(), "mark", "0x20000"); !strings.Contains(out, "dev eth0") {
			t.Fatalf("route of the node's own marked packets: %s", out)
		}
		d.Stop()
	}
}

// TestExitNodeUserspace: a userspace node dials addresses outside the
// tailnet only with Config.ExitNode, and then only through that node;
// without it the dial fails at once with an error that says so.
func TestExitNodeUserspace(t *testing.T) {
	needNetwork(t)
	l := startLab(t)
	startExitNode(t, l, "exit1")
	startExitNode(t, l, "exit2")
	dst := netip.AddrPortFrom(internetHost, 80).String()
	for _, tc := range []struct{ exit, want string }{{"", ""}, {"exit2", "exit2"}, {"exit1", "exit1"}} {
		n := lab.StartNode(t, lab.NodeOptions{ControlURL: l.ControlURL, AuthKey: l.AuthKey, Hostname: "ml-user" + tc.exit,
			Configure: func(c *microlink.Config) { c.ExitNode = tc.exit }})
		waitFor(t, 15*time.Second, "both exit nodes in the netmap", func() bool {
			var n2 int
			for _, p := range n.Peers() {
				if p.ExitNodeOption {
					n2++
				}
			}
			return n2 == 2
		})
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		if tc.exit == "" {
			_, err := n.DialTCP(ctx, dst)
			cancel()
			if !errors.Is(err, microlink.ErrNoRoute) || !strings.Contains(err.Error(), "no exit node is in use") {
				t.Fatalf("dial without an exit node: %v", err)
			}
			continue
		}
		client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return n.DialTCP(ctx, addr)
		}}, Timeout: 20 * time.Second}
		who, err := get(client, "http://"+dst+"/whoami")
		cancel()
		if err != nil || !strings.HasPrefix(who, tc.want+" ") {
			t.Fatalf("through exit node %s: %q, %v", tc.exit, who, err)
		}
		if st := n.Status(); st.ExitNode != tc.exit {
			t.Fatalf("status: exit node %q", st.ExitNode)
		}
		n.Close()
	}
}

// TestSubnetOptIn: a real tailscaled routes a subnet for the tailnet. A
// microlink node uses the route only with AcceptRoutes, both ways: its
// dials fail clearly without it, and datagrams from the subnet are
// dropped (WireGuard's source check); with it both work. In TUN mode
// the host's routes follow --accept-routes.
func TestSubnetOptIn(t *testing.T) {
	needNetwork(t)
	l := startLab(t)
	sn := netip.MustParsePrefix("198.19.210.0/24")
	r := startTSRouter(t, l, "tsrouter", sn, []string{"--advertise-routes=" + sn.String()}, sn)
	// The LAN host sends to the tailnet through the router, which does
	// not masquerade towards the tailnet.
	lab.MustRun(t, r.lanNS, "ip", "route", "add", "100.64.0.0/10", "via", sn.Addr().Next().String())
	dst := netip.AddrPortFrom(r.addr, 80).String()

	t.Run("userspace", func(t *testing.T) {
		for _, accept := range []bool{false, true} {
			n := lab.StartNode(t, lab.NodeOptions{ControlURL: l.ControlURL, AuthKey: l.AuthKey, Hostname: fmt.Sprintf("ml-accept-%v", accept),
				Configure: func(c *microlink.Config) { c.AcceptRoutes = accept }})
			var peer microlink.Peer
			waitFor(t, 15*time.Second, "the router's route in the netmap", func() bool {
				p, ok := n.Peer("tsrouter")
				peer = p
				return ok && slices.Contains(p.Routes, sn)
			})
			if got := slices.Contains(peer.AcceptedRoutes, sn); got != accept {
				t.Fatalf("AcceptRoutes %v: route accepted %v", accept, got)
			}
			uc, err := n.ListenUDP(9000)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			c, err := n.DialTCP(ctx, dst)
			cancel()
			if !accept {
				if !errors.Is(err, microlink.ErrNoRoute) || !strings.Contains(err.Error(), "does not accept subnet routes") {
					t.Fatalf("dial without AcceptRoutes: %v", err)
				}
			} else {
				if err != nil {
					t.Fatalf("dial with AcceptRoutes: %v", err)
				}
				fmt.Fprintf(c, "GET /whoami HTTP/1.0\r\n\r\n")
				buf := make([]byte, 4096)
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				m, _ := c.Read(buf)
				if !strings.Contains(string(buf[:m]), "200 OK") {
					t.Fatalf("HTTP through the subnet route: %q", buf[:m])
				}
				c.Close()
			}
			// From the LAN host to the node: through the router's
			// tunnel with the LAN source address.
			sock := listenUDPIn(t, r.lanNS, netip.AddrPortFrom(r.addr, 0))
			arrived := false
			for range 10 {
				sock.WriteToUDPAddrPort([]byte("from the LAN"), netip.AddrPortFrom(n.IPv4(), 9000))
				uc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
				m, from, err := uc.ReadFromUDPAddrPort(make([]byte, 64))
				if err == nil && m > 0 {
					if from.Addr() != r.addr {
						t.Fatalf("datagram from %v, want %v", from, r.addr)
					}
					arrived = true
					break
				}
			}
			if arrived != accept {
				t.Fatalf("AcceptRoutes %v: a datagram from the subnet arrived: %v", accept, arrived)
			}
			uc.Close()
			n.Close()
		}
	})

	t.Run("tun", func(t *testing.T) {
		h := newHost(t, "ml")
		d := lab.StartDaemon(t, lab.DaemonOptions{Hostname: mlName, ControlURL: l.ControlURL, AuthKey: l.AuthKey, Netns: h.NS, Args: []string{"--tun"}})
		waitFor(t, 15*time.Second, "the router's route in the netmap", func() bool {
			st, err := d.Status()
			p, ok := st.Peer("tsrouter")
			return err == nil && ok && slices.Contains(p.Routes, sn.String())
		})
		pingFrom(t, h.NS, r.ts.IPv4(), 10)
		noPingFrom(t, h.NS, r.addr)
		d.Stop()
		d.Opts.Args = []string{"--tun", "--accept-routes"}
		d.Restart(t)
		pingFrom(t, h.NS, r.addr, 10)
		who, err := get(httpClientIn(h.NS), "http://"+dst+"/whoami")
		if err != nil || !strings.HasPrefix(who, "tsrouter ") {
			t.Fatalf("through the accepted route: %q, %v", who, err)
		}
		st, _ := d.Status()
		if p, _ := st.Peer("tsrouter"); !slices.Contains(p.AcceptedRoutes, sn.String()) {
			t.Fatalf("status: %+v", p)
		}
	})
}
