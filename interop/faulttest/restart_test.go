package faulttest

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/microlink-go/microlink"
	"github.com/microlink-go/microlink/interop/lab"
	"tailscale.com/tstest/integration/testcontrol"
)

// Bounds on traffic after a restart, on either side. Both sides resume
// within milliseconds here; the bounds leave room for a loaded machine
// but stay below WireGuard's 5 s handshake retry, which is what traffic
// waited for before (crossed handshakes, a session the peer reset when it
// learned of the restart late), and far below the 15 s of a session one
// side kept sending into.
const (
	// restartTrafficBound is how soon after Start returns (or the real
	// peer is Running again) a TSMP ping must have been answered each way.
	restartTrafficBound = 4 * time.Second
	// restartGapBound is the longest either direction may then go without
	// an answered ping (sent every 100 ms, each given 1 s).
	restartGapBound = 2500 * time.Millisecond
	// restartWatch is how long traffic is watched after it resumed: a
	// session the peer resets when control's news arrives dies in this
	// time.
	restartWatch = 3 * time.Second
)

// TestNodeRestart: the node restarts with its state directory (same node
// key, new disco key), three times, while a real tailscaled talks to it:
// on the same UDP port (as with the default port) and on another one.
// Traffic must come back both ways within restartTrafficBound of Start
// returning and then keep flowing.
func TestNodeRestart(t *testing.T) {
	t.Parallel()
	l := lab.Start(t, lab.Options{})
	ts := l.StartTailscaled(t, lab.TSOptions{Hostname: "real-peer"})
	dir, fixed := t.TempDir(), freeUDPPort(t)
	start := func(port int) *microlink.Node {
		return lab.StartNode(t, lab.NodeOptions{ControlURL: l.ControlURL, AuthKey: l.AuthKey, Hostname: "ml-restart", StateDir: dir, Port: port})
	}
	n := start(fixed)
	waitFor(t, 5*time.Second, "real-peer in the netmap", func() bool { return hasPeer(n, "real-peer") })
	trafficBothWays(t, n, ts, 10*time.Second)

	for i, port := range []int{fixed, fixed, 0} {
		// The node has been up a while, as in the field. (Within 50 ms of
		// its last handshake, the peer would take the new instance's
		// first initiation for a flood and ignore it.)
		time.Sleep(time.Second)
		n.Close()
		n = start(port)
		took := trafficBothWays(t, n, ts, restartTrafficBound)
		out, in := longestGaps(n, ts, restartWatch)
		which := "same port"
		if port == 0 {
			which = "another port"
		}
		t.Logf("restart %d (%s): traffic both ways %v after Start returned; then longest gap out %v, in %v",
			i+1, which, took.Round(time.Millisecond), out.Round(time.Millisecond), in.Round(time.Millisecond))
		lab.WriteBench(t, "restart_times.jsonl", restartRun{Side: "microlink", Port: which, TrafficMs: took.Milliseconds(), GapOutMs: out.Milliseconds(), GapInMs: in.Milliseconds()})
		if out > restartGapBound || in > restartGapBound {
			t.Errorf("restart %d: traffic stalled after it resumed: longest gap out %v, in %v (bound %v)", i+1, out, in, restartGapBound)
		}
	}
}

// TestPeerRestart: the real tailscaled restarts with its state (same node
// key, new disco key, new UDP port), twice. The node learns of it from
// control and sends its next packets through a new handshake instead of
// the session the peer lost; traffic comes back both ways within
// restartTrafficBound of the peer running again and keeps flowing.
func TestPeerRestart(t *testing.T) {
	t.Parallel()
	// tailscaled logs in again at every start, without the auth key
	// "tailscale up" gave it, so control must not ask for one.
	l := lab.Start(t, lab.Options{ConfigureControl: func(s *testcontrol.Server) { s.RequireAuthKey = "" }})
	ts := l.StartTailscaled(t, lab.TSOptions{Hostname: "real-peer"})
	n := startNode(t, l, l.ControlURL, "ml-peer-restart")
	waitFor(t, 5*time.Second, "real-peer in the netmap", func() bool { return hasPeer(n, "real-peer") })
	trafficBothWays(t, n, ts, 10*time.Second)

	for i := range 2 {
		ts.Restart(t)
		took := trafficBothWays(t, n, ts, restartTrafficBound)
		out, in := longestGaps(n, ts, restartWatch)
		t.Logf("peer restart %d: traffic both ways %v after it was Running; then longest gap out %v, in %v",
			i+1, took.Round(time.Millisecond), out.Round(time.Millisecond), in.Round(time.Millisecond))
		lab.WriteBench(t, "restart_times.jsonl", restartRun{Side: "tailscaled", TrafficMs: took.Milliseconds(), GapOutMs: out.Milliseconds(), GapInMs: in.Milliseconds()})
		if out > restartGapBound || in > restartGapBound {
			t.Errorf("peer restart %d: traffic stalled after it resumed: longest gap out %v, in %v (bound %v)", i+1, out, in, restartGapBound)
		}
	}
}

// restartRun is one line of restart_times.jsonl.
type restartRun struct {
	Side      string `json:"side"` // which side restarted
	Port      string `json:"port,omitempty"`
	TrafficMs int64  `json:"trafficMs"`
	GapOutMs  int64  `json:"gapOutMs"`
	GapInMs   int64  `json:"gapInMs"`
}

// longestGaps pings ts from n and n from ts (TSMP) every 100 ms for d,
// both ways at once, each ping given 1 s, and returns for each direction
// the longest time without an answered ping.
func longestGaps(n *microlink.Node, ts *lab.Tailscaled, d time.Duration) (out, in time.Duration) {
	watch := func(ping func(context.Context) error) time.Duration {
		start := time.Now()
		last, longest := start, time.Duration(0)
		for time.Since(start) < d {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			err := ping(ctx)
			cancel()
			if err == nil {
				longest = max(longest, time.Since(last))
				last = time.Now()
			}
			time.Sleep(100 * time.Millisecond)
		}
		return max(longest, time.Since(last))
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		out = watch(func(ctx context.Context) error {
			_, err := n.Ping(ctx, ts.IPv4().String(), microlink.PingTSMP)
			return err
		})
	}()
	go func() {
		defer wg.Done()
		in = watch(func(ctx context.Context) error {
			_, err := ts.Ping(ctx, n.IPv4(), "TSMP")
			return err
		})
	}()
	wg.Wait()
	return out, in
}

// freeUDPPort returns a UDP port that was free a moment ago.
func freeUDPPort(t *testing.T) int {
	t.Helper()
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().(*net.UDPAddr).Port
}
