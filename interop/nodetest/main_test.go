// Package nodetest runs a microlink node against real Tailscale code: the
// testcontrol control server, the DERP server and real tailscaled peers,
// all from tailscale.com v1.102.5, inside a network namespace of its own
// when run as root.
package nodetest

import (
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/microlink-go/microlink"
	"github.com/microlink-go/microlink/interop/lab"
)

func TestMain(m *testing.M) { os.Exit(lab.RunInNetns(m)) }

// testLogger returns a logger that writes into the test log.
func testLogger(t *testing.T) *slog.Logger { return lab.Logger(t) }

// startNode starts a microlink node on the lab and waits until it is
// Connected.
func startNode(t *testing.T, l *lab.Lab, hostname, stateDir string) *microlink.Node {
	t.Helper()
	return lab.StartNode(t, lab.NodeOptions{ControlURL: l.ControlURL, AuthKey: l.AuthKey, Hostname: hostname, StateDir: stateDir})
}

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
