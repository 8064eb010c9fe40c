package headscaletest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/microlink-go/microlink"
	"github.com/microlink-go/microlink/interop/lab"
	"tailscale.com/ipn/ipnstate"
)

const (
	mlName     = "ml-hs"       // the microlink node's hostname
	peerName   = "real-peer"   // the tailscaled's hostname
	directName = "direct-peer" // the tailscaled that may use direct UDP
)

// TestHeadscale registers a microlink node and a real tailscaled with
// Headscale using one reusable pre-auth key and checks that each sees the
// other, that pings and UDP datagrams go both ways through the lab's DERP
// server (which reaches the clients only through Headscale's DERP map),
// that Headscale lists microlink as online, that a second real peer finds
// a direct path to microlink, and that microlink restarted from its state
// directory is the same node to Headscale.
func TestHeadscale(t *testing.T) {
	if g := lab.MicrolinkGoroutines(); len(g) != 0 {
		t.Fatalf("microlink goroutines before the test:\n%s", strings.Join(g, "\n\n"))
	}
	l := lab.Start(t, lab.Options{})
	hs := startHeadscale(t, l)
	key := hs.preAuthKey(t, hs.createUser(t, "lab"))

	stateDir := t.TempDir()
	n := startNode(t, hs, key, stateDir)
	if !prefix4.Contains(n.IPv4()) {
		t.Fatalf("microlink's IPv4 %v is not in headscale's %v", n.IPv4(), prefix4)
	}
	if !prefix6.Contains(n.IPv6()) {
		t.Fatalf("microlink's IPv6 %v is not in headscale's %v", n.IPv6(), prefix6)
	}
	if st := n.Status(); st.FQDN != mlName+"."+baseDomain || st.HomeDERP != lab.DERPRegionID {
		t.Fatalf("status: FQDN %q, home DERP %d; want %q and %d", st.FQDN, st.HomeDERP, mlName+"."+baseDomain, lab.DERPRegionID)
	}
	t.Logf("microlink registered as %s, %v, %v", n.Status().FQDN, n.IPv4(), n.IPv6())

	// Direct UDP stays off, so every packet crosses the lab's DERP server,
	// which the clients know of only from Headscale's DERP map.
	ts := l.StartTailscaled(t, lab.TSOptions{
		Hostname:    peerName,
		TUN:         lab.TUNAvailable() == nil,
		NeverDirect: true,
		ControlURL:  hs.URL,
		AuthKey:     key,
	})
	t.Logf("tailscaled registered as %v, %v (%s)", ts.IPv4(), ts.IPv6(), ts.TUNName)

	t.Run("Netmaps", func(t *testing.T) { testNetmaps(t, n, ts) })
	t.Run("MagicDNS", func(t *testing.T) { testMagicDNS(t, n, ts) })
	t.Run("RealPeerPings", func(t *testing.T) { testRealPeerPings(t, n, ts) })
	t.Run("MicrolinkPings", func(t *testing.T) { testMicrolinkPings(t, n, ts) })
	t.Run("UDP", func(t *testing.T) { testUDP(t, n, ts) })
	t.Run("HeadscaleNodes", func(t *testing.T) { testHeadscaleNodes(t, hs, n, ts) })
	t.Run("DirectPath", func(t *testing.T) { testDirectPath(t, l, hs, key, n) })
	t.Run("Restart", func(t *testing.T) { testRestart(t, hs, key, stateDir, n, ts) })

	// Closing the nodes stops all of their goroutines.
	n.Close()
	lab.WaitNoMicrolinkGoroutines(t, 5*time.Second)
}

// startNode starts microlink against Headscale and checks that it is
// Connected once Start returns.
func startNode(t *testing.T, hs *headscale, key, stateDir string) *microlink.Node {
	t.Helper()
	n := lab.StartNode(t, lab.NodeOptions{ControlURL: hs.URL, AuthKey: key, Hostname: mlName, StateDir: stateDir, Timeout: 30 * time.Second})
	if st := n.State(); st != microlink.Connected {
		t.Fatalf("state after Start = %v, want Connected", st)
	}
	return n
}

// testNetmaps: both netmaps hold the other node with the addresses
// headscale gave it, its hostname and its MagicDNS name, and the real
// peer knows microlink's home DERP region.
func testNetmaps(t *testing.T, n *microlink.Node, ts *lab.Tailscaled) {
	// Headscale may send the peer before the peer has reported its home
	// DERP region, and the region in a later update.
	var p microlink.Peer
	waitFor(t, 10*time.Second, peerName+" with its home DERP in microlink's netmap", func() bool {
		p, _ = n.Peer(peerName)
		return p.HomeDERP != 0
	})
	want := []netip.Addr{ts.IPv4(), ts.IPv6()}
	if !slices.Equal(p.Addresses, want) {
		t.Errorf("microlink sees %s at %v, want %v", peerName, p.Addresses, want)
	}
	if p.FQDN != peerName+"."+baseDomain {
		t.Errorf("microlink sees %s as %q", peerName, p.FQDN)
	}
	if p.HomeDERP != lab.DERPRegionID {
		t.Errorf("microlink sees %s's home DERP as %d, want %d", peerName, p.HomeDERP, lab.DERPRegionID)
	}
	if addrs, err := n.Resolve(peerName + "." + baseDomain); err != nil || !slices.Contains(addrs, ts.IPv4()) {
		t.Errorf("Resolve(%s.%s) = %v, %v", peerName, baseDomain, addrs, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	st, err := ts.WaitStatus(ctx, func(st *ipnstate.Status) bool {
		p := lab.FindPeer(st, mlName)
		return p != nil && p.Relay != ""
	})
	if err != nil {
		t.Fatalf("the real peer never saw %s with a home DERP: %v", mlName, err)
	}
	rp := lab.FindPeer(st, mlName)
	want = []netip.Addr{n.IPv4(), n.IPv6()}
	if !slices.Equal(rp.TailscaleIPs, want) {
		t.Errorf("the real peer sees %s at %v, want %v", mlName, rp.TailscaleIPs, want)
	}
	if rp.DNSName != mlName+"."+baseDomain+"." {
		t.Errorf("the real peer sees %s as %q", mlName, rp.DNSName)
	}
	if rp.Relay != "lab" {
		t.Errorf("the real peer sees %s's home DERP as %q, want the lab's", mlName, rp.Relay)
	}
	if st.Self.DNSName != peerName+"."+baseDomain+"." {
		t.Errorf("the real peer's own name is %q", st.Self.DNSName)
	}
	if got, _ := ts.CLI(ctx, "status", "--json"); !bytes.Contains(got, []byte(`"HostName": "`+mlName+`"`)) {
		t.Errorf("tailscale status --json does not list %s:\n%s", mlName, got)
	}
}

// testRealPeerPings: "tailscale ping" of every kind from the real peer
// reaches microlink through the DERP relay.
func testRealPeerPings(t *testing.T, n *microlink.Node, ts *lab.Tailscaled) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, typ := range []string{"disco", "TSMP", "ICMP"} {
		var err error
		for try := 0; try < 5; try++ {
			pctx, pcancel := context.WithTimeout(ctx, 3*time.Second)
			var res *ipnstate.PingResult
			res, err = ts.Ping(pctx, n.IPv4(), typ)
			pcancel()
			if err == nil {
				if typ == "disco" && res.DERPRegionID != lab.DERPRegionID {
					t.Fatalf("disco ping answered via region %d / %q, want DERP %d", res.DERPRegionID, res.Endpoint, lab.DERPRegionID)
				}
				t.Logf("%s ping: %v via %q region %d", typ, time.Duration(res.LatencySeconds*float64(time.Second)), res.Endpoint, res.DERPRegionID)
				break
			}
		}
		if err != nil {
			t.Fatalf("tailscale ping (%s) of %v: %v", typ, n.IPv4(), err)
		}
	}
	// The CLI agrees.
	out, err := ts.CLI(ctx, "ping", "--until-direct=false", "-c", "1", n.IPv4().String())
	if err != nil || !strings.Contains(string(out), "via DERP(lab)") {
		t.Fatalf("tailscale ping: %v\n%s", err, out)
	}
	for _, flag := range []string{"--tsmp", "--icmp"} {
		out, err := ts.CLI(ctx, "ping", flag, "-c", "1", n.IPv4().String())
		if err != nil || !strings.Contains(string(out), "pong from "+mlName) {
			t.Fatalf("tailscale ping %s: %v\n%s", flag, err, out)
		}
	}
	// Over IPv6 too.
	if _, err := ts.Ping(ctx, n.IPv6(), "TSMP"); err != nil {
		t.Fatalf("TSMP ping of %v: %v", n.IPv6(), err)
	}
}

// testMicrolinkPings: microlink's own pings of the real peer succeed.
func testMicrolinkPings(t *testing.T, n *microlink.Node, ts *lab.Tailscaled) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, typ := range []microlink.PingType{microlink.PingDisco, microlink.PingTSMP, microlink.PingICMP} {
		res, err := lab.PingRetry(ctx, n, ts.IPv4().String(), typ)
		if err != nil {
			t.Fatalf("%v ping of the real peer: %v", typ, err)
		}
		if res.Latency <= 0 || res.PeerIP != ts.IPv4() {
			t.Fatalf("%v ping: %+v", typ, res)
		}
		if typ == microlink.PingDisco && res.DERPRegion != lab.DERPRegionID {
			t.Fatalf("disco ping answered via %+v, want DERP %d", res, lab.DERPRegionID)
		}
		t.Logf("%v ping: %+v", typ, res)
	}
	// By name, and over IPv6.
	if _, err := n.Ping(ctx, peerName, microlink.PingTSMP); err != nil {
		t.Fatalf("TSMP ping by name: %v", err)
	}
	if _, err := n.Ping(ctx, ts.IPv6().String(), microlink.PingICMP); err != nil {
		t.Fatalf("ICMPv6 ping of %v: %v", ts.IPv6(), err)
	}
}

// testUDP: with the real peer in TUN mode, UDP datagrams go both ways
// between an OS socket on the peer's address and a microlink socket, with
// their bytes intact.
func testUDP(t *testing.T, n *microlink.Node, ts *lab.Tailscaled) {
	if err := lab.TUNAvailable(); err != nil {
		t.Skipf("needs the real peer in TUN mode: %v", err)
	}
	const port = 9000
	mc, err := n.ListenUDP(port)
	if err != nil {
		t.Fatal(err)
	}
	defer mc.Close()
	osc, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ts.IPv4(), 0)))
	if err != nil {
		t.Fatalf("OS socket on the real peer's address: %v", err)
	}
	defer osc.Close()
	oscAddr := osc.LocalAddr().(*net.UDPAddr).AddrPort()

	payload := bytes.Repeat([]byte{0, 1, 2, 0xff, 'h', 's'}, 200) // 1200 bytes
	buf := make([]byte, 2000)
	// The first datagram may wait for a WireGuard handshake; resend a few
	// times within the deadline.
	deadline := time.Now().Add(10 * time.Second)
	var nr int
	var from netip.AddrPort
	for {
		if _, err := osc.WriteToUDPAddrPort(payload, netip.AddrPortFrom(n.IPv4(), port)); err != nil {
			t.Fatal(err)
		}
		mc.SetReadDeadline(time.Now().Add(time.Second))
		nr, from, err = mc.ReadFromUDPAddrPort(buf)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("microlink received nothing: %v", err)
		}
	}
	if !bytes.Equal(buf[:nr], payload) {
		t.Fatalf("microlink received %d bytes, not the %d sent", nr, len(payload))
	}
	if from != oscAddr {
		t.Fatalf("datagram from %v, want the OS socket %v", from, oscAddr)
	}

	reply := append([]byte("reply:"), payload[:500]...)
	if _, err := mc.WriteToUDPAddrPort(reply, from); err != nil {
		t.Fatal(err)
	}
	osc.SetReadDeadline(time.Now().Add(10 * time.Second))
	nr, rfrom, err := osc.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("the OS socket received nothing: %v", err)
	}
	if !bytes.Equal(buf[:nr], reply) {
		t.Fatalf("the OS socket received %q, want %q", buf[:nr], reply)
	}
	if rfrom != netip.AddrPortFrom(n.IPv4(), port) {
		t.Fatalf("reply from %v, want %v", rfrom, netip.AddrPortFrom(n.IPv4(), port))
	}
}

// testHeadscaleNodes: headscale lists both nodes, microlink online with
// the addresses it uses.
func testHeadscaleNodes(t *testing.T, hs *headscale, n *microlink.Node, ts *lab.Tailscaled) {
	var nodes []hsNode
	var ml *hsNode
	deadline := time.Now().Add(10 * time.Second)
	for {
		nodes = hs.nodes(t)
		ml = nil
		for i := range nodes {
			if nodes[i].GivenName == mlName {
				ml = &nodes[i]
			}
		}
		if ml != nil && ml.Online {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("headscale does not list %s as online: %+v", mlName, nodes)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if ml.Name != mlName || ml.User.Name != "lab" {
		t.Errorf("headscale's record of microlink: %+v", *ml)
	}
	want := []string{n.IPv4().String(), n.IPv6().String()}
	if !slices.Equal(ml.IPAddresses, want) {
		t.Errorf("headscale gives %s the addresses %v, microlink uses %v", mlName, ml.IPAddresses, want)
	}
	found := false
	for _, nd := range nodes {
		if nd.GivenName == peerName {
			found = true
			if !nd.Online || !slices.Contains(nd.IPAddresses, ts.IPv4().String()) {
				t.Errorf("headscale's record of the real peer: %+v", nd)
			}
		}
	}
	if !found || len(nodes) != 2 {
		t.Errorf("headscale lists %d nodes, want %s and %s: %+v", len(nodes), mlName, peerName, nodes)
	}
}

// testDirectPath: a second real peer, allowed to use direct UDP, reaches
// microlink over a direct path and microlink reaches it directly too: the
// endpoints each side reported went through Headscale to the other.
func testDirectPath(t *testing.T, l *lab.Lab, hs *headscale, key string, n *microlink.Node) {
	ts := l.StartTailscaled(t, lab.TSOptions{Hostname: directName, ControlURL: hs.URL, AuthKey: key})
	waitFor(t, 10*time.Second, directName+" in microlink's netmap", func() bool {
		p, _ := n.Peer(directName)
		return p.HomeDERP != 0
	})
	deadline := time.Now().Add(20 * time.Second)
	var last string
	for {
		if time.Now().After(deadline) {
			t.Fatalf("no direct path within 20s: %s", last)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		// Data through WireGuard both ways starts discovery on both sides.
		ts.Ping(ctx, n.IPv4(), "TSMP")
		n.Ping(ctx, ts.IPv4().String(), microlink.PingTSMP)
		res, err := ts.Ping(ctx, n.IPv4(), "disco")
		mres, merr := n.Ping(ctx, ts.IPv4().String(), microlink.PingDisco)
		cancel()
		switch {
		case err != nil:
			last = "tailscaled's disco ping: " + err.Error()
		case res.Endpoint == "":
			last = "tailscaled's disco ping went via DERP"
		case merr != nil:
			last = "microlink's disco ping: " + merr.Error()
		case !mres.Endpoint.IsValid():
			last = "microlink's disco ping went via DERP"
		default:
			p, _ := n.Peer(directName)
			if p.Path != "direct" || p.Endpoint != mres.Endpoint {
				last = fmt.Sprintf("microlink's path is %q %v", p.Path, p.Endpoint)
				break
			}
			t.Logf("direct: tailscaled→microlink via %s, microlink→tailscaled via %v", res.Endpoint, mres.Endpoint)
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// testRestart: a node restarted with its state directory is the same node
// to headscale: same addresses, no second entry, and the real peer
// reaches it again.
func testRestart(t *testing.T, hs *headscale, key, stateDir string, old *microlink.Node, ts *lab.Tailscaled) {
	ip4, ip6 := old.IPv4(), old.IPv6()
	if err := old.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	n := startNode(t, hs, key, stateDir)
	defer n.Close()
	if n.IPv4() != ip4 || n.IPv6() != ip6 {
		t.Fatalf("restarted node has %v %v, was %v %v", n.IPv4(), n.IPv6(), ip4, ip6)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var err error
	for try := 0; try < 5; try++ {
		pctx, pcancel := context.WithTimeout(ctx, 3*time.Second)
		_, err = ts.Ping(pctx, ip4, "TSMP")
		pcancel()
		if err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("the real peer's TSMP ping of the restarted node: %v", err)
	}
	count := 0
	for _, nd := range hs.nodes(t) {
		if nd.Name == mlName || nd.GivenName == mlName {
			count++
		}
	}
	if count != 1 {
		t.Fatalf("headscale lists %d nodes named %s after the restart, want 1", count, mlName)
	}
}
