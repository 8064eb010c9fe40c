package nodetest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/microlink-go/microlink"
	"github.com/microlink-go/microlink/interop/lab"
	"tailscale.com/ipn/ipnstate"
	"tailscale.com/tailcfg"
	"tailscale.com/types/key"
)

// TestJoinTailnet: microlink registers with testcontrol, its netmap lists a
// real tailscaled with its addresses, and the tailscaled lists microlink.
func TestJoinTailnet(t *testing.T) {
	l := lab.Start(t, lab.Options{})
	ts := l.StartTailscaled(t, lab.TSOptions{Hostname: "real-peer"})
	n := startNode(t, l, "ml-join", "")

	if !n.IPv4().IsValid() || !n.IPv4().Is4() || !strings.HasPrefix(n.IPv4().String(), "100.64.") {
		t.Fatalf("IPv4 = %v", n.IPv4())
	}
	if !n.IPv6().Is6() {
		t.Fatalf("IPv6 = %v", n.IPv6())
	}
	var peer microlink.Peer
	waitFor(t, 5*time.Second, "real-peer in microlink's netmap", func() bool {
		var ok bool
		peer, ok = findPeer(n, "real-peer")
		return ok
	})
	if !slices.Contains(peer.Addresses, ts.IPv4()) || !slices.Contains(peer.Addresses, ts.IPv6()) {
		t.Fatalf("peer addresses %v, want %v and %v", peer.Addresses, ts.IPv4(), ts.IPv6())
	}
	if addrs, err := n.Resolve("real-peer"); err != nil || addrs[0] != ts.IPv4() {
		t.Fatalf("Resolve(real-peer) = %v, %v", addrs, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ps, err := ts.WaitPeer(ctx, "ml-join")
	if err != nil {
		t.Fatalf("tailscaled does not list microlink: %v", err)
	}
	if !slices.Contains(ps.TailscaleIPs, n.IPv4()) {
		t.Fatalf("tailscaled sees microlink at %v, want %v", ps.TailscaleIPs, n.IPv4())
	}
	// The CLI's JSON status says the same.
	out, err := ts.CLI(ctx, "status", "--json")
	if err != nil || !strings.Contains(string(out), `"HostName": "ml-join"`) || !strings.Contains(string(out), n.IPv4().String()) {
		t.Fatalf("tailscale status --json: %v\n%s", err, out)
	}
}

// TestPeerJoinLeave: a third node joining and leaving shows up in
// microlink's netmap within 2 s.
func TestPeerJoinLeave(t *testing.T) {
	l := lab.Start(t, lab.Options{})
	n := startNode(t, l, "ml-watch", "")

	changed := make(chan struct{}, 16)
	n.Watch(func(ev microlink.Event) {
		if ev.PeersChanged {
			select {
			case changed <- struct{}{}:
			default:
			}
		}
	})
	joinStart := time.Now()
	third := startNode(t, l, "third", "")
	waitFor(t, 2*time.Second, "third node to appear", func() bool {
		_, ok := findPeer(n, "third")
		return ok
	})
	t.Logf("join seen after %v", time.Since(joinStart))
	select {
	case <-changed:
	case <-time.After(time.Second):
		t.Fatal("no PeersChanged event for the join")
	}

	// Leaving: the node stops, and control deletes it, telling the others
	// with a PeersRemoved delta. (testcontrol keeps nodes forever, so the
	// deletion is sent the way the real control plane sends it.)
	thirdKey := nodeKey(t, third.Status().NodeKey)
	thirdNode := l.Control.Node(thirdKey)
	if thirdNode == nil {
		t.Fatal("control does not know the third node")
	}
	third.Close()
	leaveStart := time.Now()
	if !l.Control.AddRawMapResponse(nodeKey(t, n.Status().NodeKey), &tailcfg.MapResponse{PeersRemoved: []tailcfg.NodeID{thirdNode.ID}}) {
		t.Fatal("control could not queue the removal")
	}
	waitFor(t, 2*time.Second, "third node to leave", func() bool {
		_, ok := findPeer(n, "third")
		return !ok
	})
	t.Logf("leave seen after %v", time.Since(leaveStart))
}

// TestControlRestart: the control server goes away and comes back; the
// node reconnects by itself and its netmap recovers.
func TestControlRestart(t *testing.T) {
	l := lab.Start(t, lab.Options{})
	n := startNode(t, l, "ml-restart", "")
	l.RestartControl(t)
	waitFor(t, 20*time.Second, "state to leave Connected", func() bool { return n.State() != microlink.Connected })
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	if err := n.WaitState(ctx, microlink.Connected); err != nil {
		t.Fatalf("did not reconnect: %v (state %v)", err, n.Status())
	}
	// The recovered netmap sees a node that joined after the restart.
	startNode(t, l, "after-restart", "")
	waitFor(t, 5*time.Second, "post-restart peer", func() bool {
		_, ok := findPeer(n, "after-restart")
		return ok
	})
}

// TestRestartSameState: a node restarted with the same state directory keeps
// its node key and tailnet address.
func TestRestartSameState(t *testing.T) {
	l := lab.Start(t, lab.Options{})
	dir := t.TempDir()
	n1 := startNode(t, l, "ml-persist", dir)
	key1, ip1 := n1.Status().NodeKey, n1.IPv4()
	n1.Close()

	n2 := startNode(t, l, "ml-persist", dir)
	if got := n2.Status().NodeKey; got != key1 {
		t.Fatalf("node key changed across restart: %s -> %s", key1, got)
	}
	if got := n2.IPv4(); got != ip1 {
		t.Fatalf("address changed across restart: %v -> %v", ip1, got)
	}
}

// TestBadAuthKey: a wrong auth key is a clear error from Start.
func TestBadAuthKey(t *testing.T) {
	l := lab.Start(t, lab.Options{})
	n, err := microlink.New(microlink.Config{AuthKey: "tskey-wrong", ControlURL: l.ControlURL, Hostname: "bad", StateDir: t.TempDir(), Port: -1, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	err = n.Start(ctx)
	if err == nil || !strings.Contains(strings.ToLower(err.Error()), "auth") {
		t.Fatalf("Start with a bad key: %v", err)
	}
}

// TestCLIBadAuthKey: "microlink up" with a key control refuses exits
// non-zero with control's words, rather than retrying forever.
func TestCLIBadAuthKey(t *testing.T) {
	l := lab.Start(t, lab.Options{})
	bin := filepath.Join(t.TempDir(), "microlink")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/microlink-go/microlink/cmd/microlink").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "up", "--authkey", "tskey-wrong", "--hostname", "ml-bad", "--login-server", l.ControlURL,
		"--statedir", t.TempDir(), "--port", "0").CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() <= 0 || ctx.Err() != nil {
		t.Fatalf("microlink up with a bad key: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "refused to register this node: invalid authkey") {
		t.Fatalf("microlink up does not say why:\n%s", out)
	}
}

func nodeKey(t *testing.T, s string) key.NodePublic {
	t.Helper()
	var k key.NodePublic
	if err := k.UnmarshalText([]byte(s)); err != nil {
		t.Fatal(err)
	}
	return k
}

// TestLogout: the real control server accepts the logout registration
// (an expiry in the past, checked on the wire by the control package's unit
// tests; testcontrol does not record it), and the identity is removed from
// the state directory.
func TestLogout(t *testing.T) {
	l := lab.Start(t, lab.Options{})
	dir := t.TempDir()
	n := startNode(t, l, "ml-logout", dir)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "microlink.state")); !os.IsNotExist(err) {
		t.Fatalf("identity still there: %v", err)
	}
	if n.State() != microlink.Stopped {
		t.Fatalf("state = %v", n.State())
	}
}

// TestPeerCacheBeforeNetmap: a node restarted with its state directory
// talks to the peers it knew before control answers: here control is not
// reachable at all, and a TSMP ping of the real peer still gets through.
func TestPeerCacheBeforeNetmap(t *testing.T) {
	l := lab.Start(t, lab.Options{})
	ts := l.StartTailscaled(t, lab.TSOptions{Hostname: "real-peer", NeverDirect: true})
	dir := t.TempDir()
	// The node reaches control through a forwarder, which then goes away:
	// the restarted node's control server (the same URL, as its identity
	// requires) is unreachable.
	fwd, stopControl := lab.ForwardTCPStop(t, strings.TrimPrefix(l.ControlURL, "http://"))
	controlURL := "http://" + fwd
	n1 := lab.StartNode(t, lab.NodeOptions{ControlURL: controlURL, AuthKey: l.AuthKey, Hostname: "ml-cache", StateDir: dir})
	waitFor(t, 5*time.Second, "real-peer", func() bool { _, ok := findPeer(n1, "real-peer"); return ok })
	n1.Close()
	stopControl()

	n2, err := microlink.New(microlink.Config{ControlURL: controlURL, Hostname: "ml-cache", StateDir: dir, Port: -1, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer n2.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	go n2.Start(ctx) // never Connected: control is unreachable
	waitFor(t, 5*time.Second, "cached peers", func() bool { _, ok := findPeer(n2, "real-peer"); return ok })
	var lastErr error
	waitFor(t, 10*time.Second, "a TSMP pong through the cached path", func() bool {
		pctx, pcancel := context.WithTimeout(ctx, time.Second)
		defer pcancel()
		_, lastErr = n2.Ping(pctx, ts.IPv4().String(), microlink.PingTSMP)
		return lastErr == nil
	})
	if st := n2.State(); st == microlink.Connected {
		t.Fatalf("state %v without a control server", st)
	}
}

// TestNodeKeyRotation: control declares the node key expired; the node
// registers a new one for the same node (same address), saves it, keeps the
// application's sockets open, and real peers reach it under the new key.
func TestNodeKeyRotation(t *testing.T) {
	l := lab.Start(t, lab.Options{})
	dir := t.TempDir()
	n := startNode(t, l, "ml-rotate", dir)
	oldKey, ip := n.Status().NodeKey, n.IPv4()
	sock, err := n.ListenUDP(9100)
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()

	l.Control.SetExpireAllNodes(true)
	l.RestartControl(t)
	waitFor(t, 15*time.Second, "control to refuse the old key", func() bool {
		st := n.Status()
		return st.NodeKey != oldKey || (st.Err != nil && strings.Contains(st.Err.Error(), "expired"))
	})
	l.Control.SetExpireAllNodes(false)
	waitFor(t, 30*time.Second, "Connected with a new key", func() bool {
		st := n.Status()
		return st.State == microlink.Connected && st.NodeKey != oldKey
	})
	if got := n.IPv4(); got != ip {
		t.Fatalf("address changed with the key: %v -> %v", ip, got)
	}
	newKey := n.Status().NodeKey
	retireOldKey(t, l, nodeKey(t, oldKey))

	// A real peer that joins now reaches the node under its new key, and
	// the socket opened before the rotation still receives.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ts := l.StartTailscaled(t, lab.TSOptions{Hostname: "real-peer", NeverDirect: true})
	var seen []string
	if _, err := ts.WaitStatus(ctx, func(st *ipnstate.Status) bool {
		seen = seen[:0]
		for _, p := range st.Peer {
			seen = append(seen, fmt.Sprintf("%s %v relay=%q", p.PublicKey.ShortString(), p.TailscaleIPs, p.Relay))
			if p.PublicKey.String() == newKey && p.Relay != "" {
				return true
			}
		}
		return false
	}); err != nil {
		t.Fatalf("real peer does not see the new key %s: %v; it sees %v", newKey, err, seen)
	}
	waitFor(t, 5*time.Second, "real-peer in the netmap", func() bool { _, ok := findPeer(n, "real-peer"); return ok })
	if _, err := n.Ping(ctx, ts.IPv4().String(), microlink.PingTSMP); err != nil {
		t.Fatalf("our TSMP ping after rotation: %v", err)
	}
	if _, err := ts.Ping(ctx, ip, "TSMP"); err != nil {
		t.Fatalf("TSMP ping after rotation: %v", err)
	}
	if _, err := sock.WriteToUDPAddrPort([]byte("still open"), netip.AddrPortFrom(ts.IPv4(), 9)); err != nil {
		t.Fatalf("socket from before the rotation: %v", err)
	}

	// The new key was saved.
	n.Close()
	n2 := startNode(t, l, "ml-rotate", dir)
	if got := n2.Status().NodeKey; got != newKey {
		t.Fatalf("restart loaded %s, want the rotated %s", got, newKey)
	}
}

// retireOldKey models what a real control server does after a key rotation:
// the node keeps its ID and addresses under the new key, and the old key is
// gone. testcontrol retires the old key's entry only after an interactive
// follow-up; after a rotation with an auth key it keeps both entries under
// one node ID, so a peer's netmap holds either key at random. The old entry
// is moved to an unused ID without addresses, which leaves the new key as
// the only holder of the node's ID and addresses.
func retireOldKey(t *testing.T, l *lab.Lab, old key.NodePublic) {
	t.Helper()
	n := l.Control.Node(old)
	if n == nil {
		return // already retired
	}
	n.ID = 1 << 20
	n.Addresses, n.AllowedIPs = nil, nil
	l.Control.UpdateNode(n)
}
