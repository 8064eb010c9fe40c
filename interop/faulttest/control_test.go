package faulttest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/microlink-go/microlink"
	"github.com/microlink-go/microlink/interop/lab"
)

// TestControlRestarts: the control server restarts five times, each time
// cutting every connection (the Noise ones included). After each, the node
// is back on the map poll within 10 s and a real peer reaches it and is
// reached, and over all of it the node sends exactly one register request:
// its first login.
func TestControlRestarts(t *testing.T) {
	var regs registerCounter
	l := lab.Start(t, lab.Options{ConfigureControl: regs.configure})
	ts := l.StartTailscaled(t, lab.TSOptions{Hostname: "real-peer"})
	before := regs.count()
	n := startNode(t, l, l.ControlURL, "ml-restarts")
	waitFor(t, 5*time.Second, "real-peer in the netmap", func() bool { return hasPeer(n, "real-peer") })
	trafficBothWays(t, n, ts, 10*time.Second)

	for i := range 5 {
		maps := n.Stats().MapUpdates
		l.RestartControl(t)
		back := waitFor(t, 10*time.Second, "a new map stream after the restart", func() bool {
			return n.Stats().MapUpdates > maps && n.State() == microlink.Connected
		})
		took := trafficBothWays(t, n, ts, 10*time.Second)
		t.Logf("restart %d: map stream back after %v, traffic both ways %v later", i+1, back.Round(time.Millisecond), took.Round(time.Millisecond))
	}
	if got := n.Stats().RegisterRequests; got != 1 {
		t.Errorf("microlink counted %d register requests, want 1 (the first login)", got)
	}
	if got := regs.count() - before; got != 1 {
		t.Errorf("control received %d register requests after the peer joined, want 1", got)
	}
}

// TestControlBlackHole: every packet between the node and control is
// dropped for 90 s (nftables, on a forwarder only the node uses). The
// node notices within 45 s, keeps carrying traffic meanwhile, is back on
// the map poll within 10 s of the end, and by then has in its netmap a peer
// that joined during the outage. It does not log in again.
func TestControlBlackHole(t *testing.T) {
	needFirewall(t)
	t.Parallel()
	var regs registerCounter
	l := lab.Start(t, lab.Options{ConfigureControl: regs.configure})
	ts := l.StartTailscaled(t, lab.TSOptions{Hostname: "real-peer"})
	// The node reaches control through a forwarder of its own, whose port
	// nftables black-holes without touching the peers' connections.
	fwd := lab.ForwardTCP(t, strings.TrimPrefix(l.ControlURL, "http://"))
	before := regs.count()
	n := startNode(t, l, "http://"+fwd, "ml-blackhole")
	waitFor(t, 5*time.Second, "real-peer in the netmap", func() bool { return hasPeer(n, "real-peer") })
	trafficBothWays(t, n, ts, 10*time.Second)

	const outage = 90 * time.Second
	start := time.Now()
	end := blackHole(t, fwd)
	noticed := waitFor(t, 45*time.Second, "the node to notice the dead control connection", func() bool {
		return n.State() != microlink.Connected
	})
	st := n.Status()
	t.Logf("noticed after %v: state %v, error %v", noticed.Round(time.Millisecond), st.State, st.Err)
	if st.Err == nil {
		t.Errorf("state %v without the reason", st.State)
	}
	// The data plane does not need control.
	trafficBothWays(t, n, ts, 10*time.Second)

	// A peer joins while the node cannot hear about it.
	late := l.StartTailscaled(t, lab.TSOptions{Hostname: "late-peer"})
	if hasPeer(n, "late-peer") {
		t.Fatal("the node heard of late-peer through a black hole")
	}
	time.Sleep(time.Until(start.Add(outage)))
	if s := n.State(); s == microlink.Connected {
		t.Fatalf("state %v at the end of the outage", s)
	}
	end()
	back := waitFor(t, 10*time.Second, "Connected after the outage", func() bool { return n.State() == microlink.Connected })
	seen := back + waitFor(t, 10*time.Second-back, "late-peer in the netmap", func() bool { return hasPeer(n, "late-peer") })
	took := trafficBothWays(t, n, late, 10*time.Second)
	t.Logf("after the outage: Connected in %v, late-peer in the netmap in %v, traffic with it %v later",
		back.Round(time.Millisecond), seen.Round(time.Millisecond), took.Round(time.Millisecond))
	if st := n.Status(); st.Err != nil {
		t.Errorf("Connected with the old error %v", st.Err)
	}
	if got := n.Stats().RegisterRequests; got != 1 {
		t.Errorf("microlink counted %d register requests, want 1 (the first login)", got)
	}
	if got := regs.count() - before; got != 2 { // microlink's login and late-peer's
		t.Errorf("control received %d register requests, want 2 (microlink's and late-peer's logins)", got)
	}
}

// TestControlResetEmpty: the control server comes back empty, with a new
// key (as after losing its database). The node finds it does not know the
// node, logs in again with its auth key, takes the address the new server
// gives it, and real peers of the new tailnet reach it.
func TestControlResetEmpty(t *testing.T) {
	var regs registerCounter
	l := lab.Start(t, lab.Options{ConfigureControl: regs.configure})
	ts := l.StartTailscaled(t, lab.TSOptions{Hostname: "real-peer"})
	n := startNode(t, l, l.ControlURL, "ml-reset")
	trafficBothWays(t, n, ts, 10*time.Second)
	nodeKey := n.Status().NodeKey

	regs.n.Store(0)
	l.ResetControl(t)
	back := waitFor(t, 30*time.Second, "Connected to the new control server", func() bool {
		return n.State() == microlink.Connected && l.Control.Node(parseNodeKey(t, nodeKey)) != nil
	})
	if got := regs.count(); got != 1 {
		t.Errorf("the new control server received %d register requests, want 1", got)
	}
	if got := n.Stats().RegisterRequests; got != 2 {
		t.Errorf("microlink counted %d register requests, want 2 (the first login and the new one)", got)
	}
	if got := n.Status().NodeKey; got != nodeKey {
		t.Errorf("node key changed from %s to %s", nodeKey, got)
	}
	want := addrOf(t, l.Control, nodeKey)
	waitFor(t, 5*time.Second, "the address from the new server", func() bool { return n.IPv4() == want })

	fresh := l.StartTailscaled(t, lab.TSOptions{Hostname: "new-peer"})
	waitFor(t, 10*time.Second, "new-peer in the netmap", func() bool { return hasPeer(n, "new-peer") })
	took := trafficBothWays(t, n, fresh, 15*time.Second)
	t.Logf("logged in again %v after the reset (address %v); traffic with a new peer %v after it joined", back.Round(time.Millisecond), want, took.Round(time.Millisecond))
	if hasPeer(n, "real-peer") {
		t.Error("a peer of the lost tailnet is still in the netmap")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := fresh.WaitPeer(ctx, "ml-reset"); err != nil {
		t.Error(err)
	}
}
