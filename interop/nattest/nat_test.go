package nattest

import (
	"context"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/microlink-go/microlink/interop/lab"
	"tailscale.com/ipn/ipnstate"
)

// pair is a real tailscaled and a microlink node, each in a host
// namespace of its own, joined to one lab.
type pair struct {
	ts     *lab.Tailscaled
	ml     *mlNode
	tsHost *host
	mlHost *host
}

const (
	tsName = "real-peer"
	mlName = "ml-node"
)

// startLab starts the lab's servers on the internet address. Their logs
// are kept and printed only if the test fails.
func startLab(t *testing.T) *lab.Lab {
	t.Helper()
	setupInternet(t)
	logs := &logBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("lab log:\n%s", tail(logs.String(), 150))
		}
	})
	return lab.Start(t, lab.Options{
		ListenAddr: serverAddr,
		Logf: func(format string, args ...any) {
			logf(logs, format, args...)
		},
	})
}

// startPair starts tailscaled (TUN mode) on tsHost and microlink on
// mlHost and waits until each has the other in its netmap, with a home
// relay.
func startPair(t *testing.T, tsHost, mlHost *host) *pair {
	t.Helper()
	l := startLab(t)
	p := &pair{tsHost: tsHost, mlHost: mlHost}
	p.ts = l.StartTailscaled(t, lab.TSOptions{Hostname: tsName, TUN: true, Netns: tsHost.NS})
	p.ml = startML(t, l, mlHost.NS, mlName)
	waitFor(t, 10*time.Second, "tailscaled in microlink's netmap", func() bool {
		_, ok := p.ml.Peer(t, tsName)
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
	// microlink tells control its home region while its DERP connection
	// may still be coming up; a disco ping sent before the relay knows it
	// is lost, and tailscaled does not resend it. Warm up until one
	// arrives.
	waitFor(t, 10*time.Second, "tailscaled's first disco ping of microlink", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := p.ts.Ping(ctx, p.ml.IPv4, "disco")
		return err == nil
	})
	return p
}

// waitDirect exchanges traffic both ways until each side uses a direct
// path to the other, and checks that tailscaled reaches microlink at
// mlAddr and microlink reaches tailscaled at tsAddr (IP addresses; the
// ports are whatever the sockets and NATs chose). It returns both paths.
func (p *pair) waitDirect(t *testing.T, d time.Duration, mlAddr, tsAddr netip.Addr) (tsToML, mlToTS netip.AddrPort) {
	t.Helper()
	deadline := time.Now().Add(d)
	var last string
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		// Data through WireGuard both ways starts discovery on both sides.
		p.ts.Ping(ctx, p.ml.IPv4, "TSMP")
		p.ml.Ping(p.ts.IPv4().String(), "TSMP")
		res, err := p.ts.Ping(ctx, p.ml.IPv4, "disco")
		cancel()
		switch {
		case err != nil:
			last = "tailscaled disco ping: " + err.Error()
		case res.Endpoint == "":
			last = "tailscaled disco ping went via DERP"
		default:
			tsToML = netip.MustParseAddrPort(res.Endpoint)
			peer, _ := p.ml.Peer(t, tsName)
			if peer.Path != "direct" {
				last = "microlink's path is " + peer.Path
				break
			}
			mlToTS = peer.Endpoint
			if tsToML.Addr() != mlAddr || mlToTS.Addr() != tsAddr {
				t.Fatalf("direct paths: tailscaled→microlink via %v, want %v; microlink→tailscaled via %v, want %v", tsToML, mlAddr, mlToTS, tsAddr)
			}
			return tsToML, mlToTS
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("no direct path within %v: %s", d, last)
	return
}

// TestSameLANDirect: on one LAN, tailscaled's "tailscale ping" reaches
// microlink directly at its LAN address, and microlink's status shows the
// direct path to tailscaled's LAN address.
func TestSameLANDirect(t *testing.T) {
	needNetwork(t)
	s := newSite(t, "lan", natEIM)
	p := startPair(t, s.newHost(t, "ts"), s.newHost(t, "ml"))
	tsToML, mlToTS := p.waitDirect(t, 20*time.Second, p.mlHost.Addr, p.tsHost.Addr)
	t.Logf("direct: tailscaled→microlink via %v, microlink→tailscaled via %v", tsToML, mlToTS)

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	out, err := p.ts.CLI(ctx, "ping", "-c", "3", p.ml.IPv4.String())
	if err != nil || !contains(out, "via "+tsToML.String()) {
		t.Fatalf("tailscale ping: %v\n%s", err, out)
	}
	t.Logf("tailscale ping:\n%s", out)
	peer, _ := p.ml.Peer(t, tsName)
	if peer.Path != "direct" || peer.Endpoint != mlToTS || peer.Latency <= 0 {
		t.Fatalf("microlink's view of tailscaled: path %q endpoint %v latency %v", peer.Path, peer.Endpoint, peer.Latency)
	}
	res, err := p.ml.Ping(p.ts.IPv4().String(), "disco")
	if err != nil || res.Endpoint.Addr() != p.tsHost.Addr {
		t.Fatalf("microlink disco ping: %+v, %v", res, err)
	}
}

// TestBothBehindNATDirect: microlink and tailscaled sit behind two
// endpoint-independent NATs with the servers on the internet between
// them; hole punching gives a direct path, each side reaching the other
// at the other's NAT public address.
func TestBothBehindNATDirect(t *testing.T) {
	needNetwork(t)
	a, b := newSite(t, "ra", natEIM), newSite(t, "rb", natEIM)
	tsHost, mlHost := b.newHost(t, "ts"), a.newHost(t, "ml")
	tsHost.checkNAT(t, true)
	mlHost.checkNAT(t, true)
	p := startPair(t, tsHost, mlHost)
	tsToML, mlToTS := p.waitDirect(t, 25*time.Second, a.WAN, b.WAN)
	t.Logf("direct through NATs: tailscaled→microlink via %v, microlink→tailscaled via %v", tsToML, mlToTS)

	res, err := p.ml.Ping(p.ts.IPv4().String(), "disco")
	if err != nil || res.Endpoint.Addr() != b.WAN {
		t.Fatalf("microlink disco ping: %+v, %v; want a reply via %v", res, err, b.WAN)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := p.ts.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if peer := lab.FindPeer(st, mlName); peer == nil || !hasAddr(peer.CurAddr, a.WAN) {
		t.Fatalf("tailscaled status of microlink: %+v", peer)
	}
}

// TestEndpointDependentNATUsesDERP: microlink sits behind a NAT that maps
// every destination to a new port, tailscaled behind an ordinary one, so
// no hole can be punched. Pings and UDP datagrams still flow, through
// DERP.
func TestEndpointDependentNATUsesDERP(t *testing.T) {
	needNetwork(t)
	a, b := newSite(t, "ra", natEDM), newSite(t, "rb", natEIM)
	tsHost, mlHost := b.newHost(t, "ts"), a.newHost(t, "ml")
	tsHost.checkNAT(t, true)
	mlHost.checkNAT(t, false)
	p := startPair(t, tsHost, mlHost)
	sock := listenUDPIn(t, p.tsHost.NS, netip.AddrPortFrom(p.ts.IPv4(), 0))
	stats0 := p.ml.Stats(t)
	st := startStream(t, sock, netip.AddrPortFrom(p.ml.IPv4, echoPort), 50*time.Millisecond)

	// Give discovery several heartbeats and ping rounds to (fail to) find
	// a direct path while data flows.
	deadline := time.Now().Add(8 * time.Second)
	for time.Now().Before(deadline) {
		for _, typ := range []string{"disco", "TSMP", "ICMP"} {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			res, err := p.ts.Ping(ctx, p.ml.IPv4, typ)
			cancel()
			if err != nil {
				t.Fatalf("tailscaled %s ping of microlink: %v", typ, err)
			}
			if typ == "disco" && (res.Endpoint != "" || res.DERPRegionID != lab.DERPRegionID) {
				t.Fatalf("disco ping went via %q / region %d, want DERP %d", res.Endpoint, res.DERPRegionID, lab.DERPRegionID)
			}
		}
		res, err := p.ml.Ping(p.ts.IPv4().String(), "disco")
		if err != nil || res.Endpoint.IsValid() || res.DERPRegion != lab.DERPRegionID {
			t.Fatalf("microlink disco ping: %+v, %v; want a reply via DERP %d", res, err, lab.DERPRegionID)
		}
		time.Sleep(500 * time.Millisecond)
	}
	peer, _ := p.ml.Peer(t, tsName)
	if peer.Path != "derp" || peer.DERPRegion != lab.DERPRegionID {
		t.Fatalf("microlink's path to tailscaled: %q region %d endpoint %v", peer.Path, peer.DERPRegion, peer.Endpoint)
	}
	sent, got, gap := st.stop()
	t.Logf("UDP over DERP: %d sent, %d echoed, longest gap %v", sent, got, gap)
	if got < sent*9/10 || gap > 2*time.Second {
		t.Fatalf("UDP stream over DERP: %d of %d echoed, longest gap %v", got, sent, gap)
	}
	// Every datagram and every echo went through the relay, and microlink
	// counted them there.
	stats := p.ml.Stats(t)
	if in, out := stats.DERPPacketsIn-stats0.DERPPacketsIn, stats.DERPPacketsOut-stats0.DERPPacketsOut; in < uint64(got) || out < uint64(got) {
		t.Fatalf("microlink counted %d WireGuard messages in and %d out through DERP, for %d datagrams echoed", in, out, got)
	}
}

func hasAddr(s string, a netip.Addr) bool {
	ap, err := netip.ParseAddrPort(s)
	return err == nil && ap.Addr() == a
}

// TestDirectPathCut: with a direct path through two NATs and a UDP
// stream flowing (an OS socket in tailscaled's namespace, through its
// TUN, to microlink's echo port and back, every 50 ms), the internet
// starts dropping UDP between the two NATs. The stream goes on through
// DERP, and returns to the direct path once the cut is lifted. The gap
// and the time back to direct are logged and, if MICROLINK_BENCH_OUT is
// set, appended to nat_times.jsonl there.
func TestDirectPathCut(t *testing.T) {
	needNetwork(t)
	a, b := newSite(t, "ra", natEIM), newSite(t, "rb", natEIM)
	p := startPair(t, b.newHost(t, "ts"), a.newHost(t, "ml"))
	p.waitDirect(t, 25*time.Second, a.WAN, b.WAN)

	const interval = 50 * time.Millisecond
	sock := listenUDPIn(t, p.tsHost.NS, netip.AddrPortFrom(p.ts.IPv4(), 0))
	st := startStream(t, sock, netip.AddrPortFrom(p.ml.IPv4, echoPort), interval)
	waitFor(t, 5*time.Second, "the stream's first echoes", func() bool { return st.echoedSince(time.Time{}) >= 10 })
	p.waitDirect(t, 10*time.Second, a.WAN, b.WAN) // still direct with the stream on
	// Let the heartbeats, not the pings above, keep the path trusted, and
	// cut at a random moment of their 3 s cycle, so that runs sample all
	// of it, the worst case included.
	time.Sleep(2*time.Second + rand.N(3*time.Second))

	lift := cutUDP(t, a.WAN, b.WAN)
	cutAt := time.Now()
	t.Logf("cut UDP between %v and %v", a.WAN, b.WAN)
	// microlink's heartbeat (every 3 s) with its retries finds the path
	// dead at most 4.2 s after the cut; it then sends over DERP too, and
	// its call-me-maybe without the dead endpoint makes tailscaled give up
	// the path at once instead of trusting it until 6.5 s after its last
	// pong.
	const maxGap = 5 * time.Second
	waitFor(t, maxGap+2*time.Second, "echoes over DERP after the cut", func() bool {
		return st.echoedSince(cutAt) >= 10
	})
	lastBefore, firstAfter := st.around(cutAt)
	gap := firstAfter.Sub(lastBefore)
	resumed := firstAfter.Sub(cutAt)
	// One way: when the first datagram sent after the cut reached
	// microlink (tailscaled's side of the switch to DERP).
	firstSeq, _ := st.sentAfter(cutAt)
	var oneWay time.Duration
	for _, a := range p.ml.Arrivals(t, cutAt) {
		if a.Seq >= firstSeq {
			oneWay = time.Unix(0, a.At).Sub(cutAt)
			break
		}
	}
	t.Logf("after the cut: tailscaled→microlink resumed over DERP in %v, the echo stream (both ways) in %v; gap between echoes %v",
		oneWay.Round(time.Millisecond), resumed.Round(time.Millisecond), gap.Round(time.Millisecond))
	if gap > maxGap {
		t.Errorf("stream gap %v, want at most %v", gap, maxGap)
	}
	peer, _ := p.ml.Peer(t, tsName)
	if peer.Path != "derp" {
		t.Errorf("during the cut microlink's path is %q (%v), want derp", peer.Path, peer.Endpoint)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	res, err := p.ts.Ping(ctx, p.ml.IPv4, "disco")
	cancel()
	if err != nil || res.DERPRegionID != lab.DERPRegionID {
		t.Errorf("tailscaled disco ping during the cut: %+v, %v; want via DERP", res, err)
	}
	// The stream keeps flowing over DERP, and nothing arrives directly.
	stats0 := p.ml.Stats(t)
	time.Sleep(time.Second)
	if _, lg := st.gapSince(firstAfter); lg > time.Second {
		t.Errorf("stream over DERP stalled for %v", lg)
	}
	stats := p.ml.Stats(t)
	if d := stats.DirectPacketsIn - stats0.DirectPacketsIn; d != 0 {
		t.Errorf("microlink counted %d WireGuard messages arriving directly during the cut", d)
	}
	if in, out := stats.DERPPacketsIn-stats0.DERPPacketsIn, stats.DERPPacketsOut-stats0.DERPPacketsOut; in < 10 || out < 10 {
		t.Errorf("microlink counted %d WireGuard messages in and %d out through DERP in a second of the stream", in, out)
	}

	lift()
	liftAt := time.Now()
	var back time.Duration
	waitFor(t, 15*time.Second, "the direct path after lifting the cut", func() bool {
		peer, _ := p.ml.Peer(t, tsName)
		if peer.Path != "direct" || peer.Endpoint.Addr() != b.WAN {
			return false
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		st, err := p.ts.Status(ctx)
		if err != nil {
			return false
		}
		tp := lab.FindPeer(st, mlName)
		if tp == nil || !hasAddr(tp.CurAddr, a.WAN) {
			return false
		}
		back = time.Since(liftAt)
		return true
	})
	t.Logf("back to direct %v after lifting the cut", back.Round(time.Millisecond))
	time.Sleep(500 * time.Millisecond)
	sent, echoed, _ := st.stop()
	t.Logf("stream: %d sent every %v, %d echoed", sent, interval, echoed)
	if echoed < sent-int(maxGap/interval)-5 {
		t.Errorf("only %d of %d datagrams came back", echoed, sent)
	}
	writeBench(t, "nat_times.jsonl", map[string]any{
		"streamIntervalMs":    interval.Milliseconds(),
		"cutToDERPMs":         resumed.Milliseconds(),
		"cutToDERPOneWayMs":   oneWay.Milliseconds(),
		"streamGapMs":         gap.Milliseconds(),
		"liftToDirectMs":      back.Milliseconds(),
		"datagramsSent":       sent,
		"datagramsEchoed":     echoed,
		"maxGapMs":            maxGap.Milliseconds(),
		"description":         "direct path between two NATs cut by dropping UDP; a UDP echo stream every streamIntervalMs (tailscaled's TUN to microlink and back) continues over DERP: cutToDERPOneWayMs until tailscaled's datagrams reach microlink again, cutToDERPMs until echoes come back, streamGapMs between the last echo before and the first after; liftToDirectMs from lifting the cut until both sides use the direct path",
		"microlinkBehindNAT":  true,
		"tailscaledBehindNAT": true,
	})
}
