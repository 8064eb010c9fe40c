package nodetest

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/microlink-go/microlink"
	"github.com/microlink-go/microlink/interop/lab"
	"tailscale.com/ipn/ipnstate"
	"tailscale.com/tailcfg"
)

// derpLab starts a lab with a real tailscaled that never uses direct UDP
// (TUN mode when the test runs as root in its namespace) and a connected
// microlink node that both sides see.
func derpLab(t *testing.T, hostname string) (*lab.Lab, *lab.Tailscaled, *microlink.Node) {
	t.Helper()
	l := lab.Start(t, lab.Options{})
	tun := lab.TUNAvailable() == nil
	ts := l.StartTailscaled(t, lab.TSOptions{Hostname: "real-peer", TUN: tun, NeverDirect: true})
	n := startNode(t, l, hostname, "")
	waitFor(t, 5*time.Second, "real-peer in the netmap", func() bool { _, ok := findPeer(n, "real-peer"); return ok })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The real peer can reach us once control has told it our home region.
	if _, err := ts.WaitStatus(ctx, func(st *ipnstate.Status) bool {
		p := lab.FindPeer(st, hostname)
		return p != nil && p.Relay != ""
	}); err != nil {
		t.Fatalf("real peer never learned microlink's home DERP: %v", err)
	}
	return l, ts, n
}

// TestRealPeerPingsOverDERP: "tailscale ping" of every kind from a real
// peer reaches microlink through the DERP relay.
func TestRealPeerPingsOverDERP(t *testing.T) {
	_, ts, n := derpLab(t, "ml-derp")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, typ := range []string{"disco", "TSMP", "ICMP"} {
		var res any
		var err error
		for try := 0; try < 3; try++ {
			pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
			pr, perr := ts.Ping(pctx, n.IPv4(), typ)
			pcancel()
			err = perr
			if err == nil {
				res = pr
				if typ == "disco" && pr.DERPRegionID != lab.DERPRegionID {
					t.Fatalf("disco ping went via region %d / %q, want DERP %d", pr.DERPRegionID, pr.Endpoint, lab.DERPRegionID)
				}
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("tailscale ping --%s: %v", typ, err)
		}
		t.Logf("%s ping: %+v", typ, res)
	}
	// Over IPv6 too.
	for _, typ := range []string{"TSMP", "ICMP"} {
		pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := ts.Ping(pctx, n.IPv6(), typ)
		pcancel()
		if err != nil {
			t.Fatalf("%s ping of %v: %v", typ, n.IPv6(), err)
		}
	}
	if _, err := n.Ping(ctx, ts.IPv6().String(), microlink.PingICMP); err != nil {
		t.Fatalf("our ICMPv6 ping of the real peer: %v", err)
	}
	// The CLI agrees, and reports the relay.
	out, err := ts.CLI(ctx, "ping", "--until-direct=false", "-c", "1", n.IPv4().String())
	if err != nil || !strings.Contains(string(out), "via DERP") {
		t.Fatalf("tailscale ping: %v\n%s", err, out)
	}
	for _, flag := range []string{"--tsmp", "--icmp"} {
		out, err := ts.CLI(ctx, "ping", flag, "-c", "1", n.IPv4().String())
		if err != nil || !strings.Contains(string(out), "pong from ml-derp") {
			t.Fatalf("tailscale ping %s: %v\n%s", flag, err, out)
		}
	}
}

// TestMicrolinkPingsRealPeer: microlink's own disco, TSMP and ICMP pings of
// the real peer succeed.
func TestMicrolinkPingsRealPeer(t *testing.T) {
	_, ts, n := derpLab(t, "ml-pinger")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, typ := range []microlink.PingType{microlink.PingDisco, microlink.PingTSMP, microlink.PingICMP} {
		res, err := lab.PingRetry(ctx, n, ts.IPv4().String(), typ)
		if err != nil {
			t.Fatalf("%v ping of the real peer: %v", typ, err)
		}
		if res.Latency <= 0 {
			t.Fatalf("%v ping: latency %v", typ, res.Latency)
		}
		t.Logf("%v ping: %+v", typ, res)
	}
	// By name too.
	if _, err := n.Ping(ctx, "real-peer", microlink.PingTSMP); err != nil {
		t.Fatalf("ping by name: %v", err)
	}
}

// TestOSPingAndUDP: with the real peer in TUN mode, the operating system's
// ping reaches microlink's address, and UDP datagrams go both ways between
// an OS socket and a microlink socket with their bytes intact.
func TestOSPingAndUDP(t *testing.T) {
	if err := lab.TUNAvailable(); err != nil {
		t.Skipf("needs the real peer in TUN mode: %v", err)
	}
	_, ts, n := derpLab(t, "ml-udp")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Warm the path (first packets wait for the WireGuard handshake).
	ts.Ping(ctx, n.IPv4(), "TSMP")

	out, err := lab.Command(ctx, "ping", "-c", "3", "-W", "5", n.IPv4().String()).CombinedOutput()
	if err != nil {
		t.Fatalf("OS ping %v: %v\n%s", n.IPv4(), err, out)
	}
	if !strings.Contains(string(out), "3 received") {
		t.Fatalf("OS ping lost replies:\n%s", out)
	}

	mc, err := n.ListenUDP(9000)
	if err != nil {
		t.Fatal(err)
	}
	defer mc.Close()
	osc, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ts.IPv4(), 0)))
	if err != nil {
		t.Fatalf("OS socket on the real peer's address: %v", err)
	}
	defer osc.Close()

	payload := bytes.Repeat([]byte{0, 1, 2, 0xff, 'm', 'l'}, 150) // 900 bytes, all byte values kinds
	if _, err := osc.WriteToUDPAddrPort(payload, netip.AddrPortFrom(n.IPv4(), 9000)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2000)
	mc.SetReadDeadline(time.Now().Add(10 * time.Second))
	nr, from, err := mc.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("microlink did not receive: %v", err)
	}
	if !bytes.Equal(buf[:nr], payload) {
		t.Fatalf("received %d bytes, corrupted", nr)
	}
	if from.Addr() != ts.IPv4() || int(from.Port()) != osc.LocalAddr().(*net.UDPAddr).Port {
		t.Fatalf("from %v, want the OS socket %v", from, osc.LocalAddr())
	}
	reply := append([]byte("reply:"), payload[:100]...)
	if _, err := mc.WriteToUDPAddrPort(reply, from); err != nil {
		t.Fatal(err)
	}
	osc.SetReadDeadline(time.Now().Add(10 * time.Second))
	nr, _, err = osc.ReadFromUDPAddrPort(buf)
	if err != nil || !bytes.Equal(buf[:nr], reply) {
		t.Fatalf("OS socket got %q, %v", buf[:nr], err)
	}

	// DialUDP by name, to a listener on the OS side.
	dc, err := n.DialUDP(ctx, "real-peer:"+strconv.Itoa(osc.LocalAddr().(*net.UDPAddr).Port))
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	if _, err := dc.Write([]byte("dialed")); err != nil {
		t.Fatal(err)
	}
	nr, _, err = osc.ReadFromUDPAddrPort(buf)
	if err != nil || string(buf[:nr]) != "dialed" {
		t.Fatalf("dialed datagram: %q, %v", buf[:nr], err)
	}
	st := n.Stats()
	if st.PacketsIn == 0 || st.PacketsOut == 0 || st.Handshakes == 0 || st.MapUpdates == 0 {
		t.Fatalf("stats = %+v", st)
	}
	// The real peer never sends directly: all it sent came through DERP.
	if st.DERPPacketsIn < st.PacketsIn || st.DERPPacketsOut == 0 || st.DirectPacketsIn != 0 {
		t.Fatalf("by path: %+v", st)
	}
	if p, _ := findPeer(n, "real-peer"); p.RxBytes == 0 || p.TxBytes == 0 {
		t.Fatalf("peer counters = %+v", p)
	}
}

// TestACL: with a packet filter that allows only one UDP port, datagrams to
// that port arrive and datagrams to another port do not.
func TestACL(t *testing.T) {
	if err := lab.TUNAvailable(); err != nil {
		t.Skipf("needs the real peer in TUN mode: %v", err)
	}
	l, ts, n := derpLab(t, "ml-acl")
	rule := []tailcfg.FilterRule{{
		SrcIPs:   []string{"*"},
		DstPorts: []tailcfg.NetPortRange{{IP: "*", Ports: tailcfg.PortRange{First: 7000, Last: 7000}}},
		IPProto:  []int{17},
	}}
	if !l.Control.AddRawMapResponse(nodeKey(t, n.Status().NodeKey), &tailcfg.MapResponse{PacketFilter: rule}) {
		t.Fatal("could not push the packet filter")
	}
	allowed, err := n.ListenUDP(7000)
	if err != nil {
		t.Fatal(err)
	}
	denied, err := n.ListenUDP(7001)
	if err != nil {
		t.Fatal(err)
	}
	osc, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ts.IPv4(), 0)))
	if err != nil {
		t.Fatal(err)
	}
	defer osc.Close()
	buf := make([]byte, 100)
	// The filter arrives asynchronously: wait until the denied port stops
	// receiving while the allowed one still does.
	deadline := time.Now().Add(10 * time.Second)
	for {
		osc.WriteToUDPAddrPort([]byte("to-7001"), netip.AddrPortFrom(n.IPv4(), 7001))
		osc.WriteToUDPAddrPort([]byte("to-7000"), netip.AddrPortFrom(n.IPv4(), 7000))
		allowed.SetReadDeadline(time.Now().Add(time.Second))
		nr, _, err := allowed.ReadFromUDPAddrPort(buf)
		if err != nil {
			// The first datagrams wait for a WireGuard session.
			if time.Now().After(deadline) {
				t.Fatalf("allowed port: nothing arrived: %v", err)
			}
			continue
		}
		if string(buf[:nr]) != "to-7000" {
			t.Fatalf("allowed port got %q", buf[:nr])
		}
		denied.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		_, _, err = denied.ReadFromUDPAddrPort(buf)
		if err != nil {
			break // nothing arrived on the denied port: the filter holds
		}
		if time.Now().After(deadline) {
			t.Fatal("datagrams to a port the ACL does not allow keep arriving")
		}
	}
	// Still enforced for later datagrams, and the allowed port still works.
	for i := 0; i < 3; i++ {
		osc.WriteToUDPAddrPort([]byte("again"), netip.AddrPortFrom(n.IPv4(), 7001))
	}
	osc.WriteToUDPAddrPort([]byte("ok"), netip.AddrPortFrom(n.IPv4(), 7000))
	allowed.SetReadDeadline(time.Now().Add(3 * time.Second))
	if nr, _, err := allowed.ReadFromUDPAddrPort(buf); err != nil || string(buf[:nr]) != "ok" {
		t.Fatalf("allowed port after filter: %q %v", buf[:nr], err)
	}
	denied.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if _, _, err := denied.ReadFromUDPAddrPort(buf); err == nil {
		t.Fatal("denied port received a datagram")
	}
	if st := n.Stats(); st.Dropped == 0 {
		t.Fatal("no drops counted")
	}
	// TSMP is answered before the filter, as the real client does.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := ts.Ping(ctx, n.IPv4(), "TSMP"); err != nil {
		t.Fatalf("TSMP under a UDP-only filter: %v", err)
	}
}
