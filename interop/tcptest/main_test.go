// Package tcptest runs microlink's TCP against the Linux kernel's TCP
// through a real tailscaled in TUN mode: the test process and the
// tailscaled share a network namespace of their own, so the test's OS
// sockets on the 100.x addresses go through the kernel stack, the TUN
// device and tailscaled to microlink, over DERP or a direct path.
package tcptest

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/microlink-go/microlink"
	"github.com/microlink-go/microlink/interop/lab"
	"tailscale.com/ipn/ipnstate"
)

func TestMain(m *testing.M) { os.Exit(lab.RunInNetns(m)) }

// tcpLab starts a lab, a real tailscaled in TUN mode and a connected
// microlink node, and waits until each can reach the other.
func tcpLab(t *testing.T, hostname string, neverDirect bool) (*lab.Lab, *lab.Tailscaled, *microlink.Node) {
	t.Helper()
	return tcpLabConfig(t, hostname, neverDirect, microlink.TCPConfig{})
}

// tcpLabConfig is tcpLab with the node's TCP settings.
func tcpLabConfig(t *testing.T, hostname string, neverDirect bool, tcp microlink.TCPConfig) (*lab.Lab, *lab.Tailscaled, *microlink.Node) {
	t.Helper()
	if err := lab.TUNAvailable(); err != nil {
		t.Skipf("needs the real peer in TUN mode: %v", err)
	}
	l := lab.Start(t, lab.Options{})
	ts := l.StartTailscaled(t, lab.TSOptions{Hostname: "real-peer", TUN: true, NeverDirect: neverDirect})
	n := lab.StartNode(t, lab.NodeOptions{ControlURL: l.ControlURL, AuthKey: l.AuthKey, Hostname: hostname, TCP: tcp})
	waitFor(t, 5*time.Second, "real-peer in the netmap", func() bool { _, ok := findPeer(n, "real-peer"); return ok })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := ts.WaitStatus(ctx, func(st *ipnstate.Status) bool {
		p := lab.FindPeer(st, hostname)
		return p != nil && p.Relay != ""
	}); err != nil {
		t.Fatalf("real peer never learned microlink's home DERP: %v", err)
	}
	// The first packets wait for the WireGuard handshake: warm the path.
	lab.PingRetry(ctx, n, ts.IPv4().String(), microlink.PingTSMP)
	return l, ts, n
}

// testLogger returns a logger that writes into the test log.
func testLogger(t *testing.T) *slog.Logger { return lab.Logger(t) }

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	lab.WaitFor(t, d, what, cond)
}

func findPeer(n *microlink.Node, name string) (microlink.Peer, bool) {
	for _, p := range n.Peers() {
		if p.Name == name {
			return p, true
		}
	}
	return microlink.Peer{}, false
}
