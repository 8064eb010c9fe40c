// Package nodetest runs a microlink node against real Tailscale code: the
// testcontrol control server, the DERP server and real tailscaled peers,
// all from tailscale.com v1.102.5, inside a network namespace of its own
// when run as root.
package nodetest

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microlink-go/microlink"
	"github.com/microlink-go/microlink/interop/lab"
)

func TestMain(m *testing.M) { os.Exit(lab.RunInNetns(m)) }

// testLogger returns a logger that writes into the test log, and only after
// the test has started, so a failing test shows what the node did.
func testLogger(t *testing.T) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(w.stop)
	level := slog.LevelInfo
	if os.Getenv("MICROLINK_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

type testWriter struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testWriter) stop() { w.mu.Lock(); w.done = true; w.mu.Unlock() }

var _ io.Writer = (*testWriter)(nil)

// startNode starts a microlink node on the lab and waits until it is
// Connected.
func startNode(t *testing.T, l *lab.Lab, hostname, stateDir string) *microlink.Node {
	t.Helper()
	if stateDir == "" {
		stateDir = t.TempDir()
	}
	n, err := microlink.New(microlink.Config{
		AuthKey:    l.AuthKey,
		ControlURL: l.ControlURL,
		Hostname:   hostname,
		StateDir:   stateDir,
		Port:       -1,
		Logger:     testLogger(t).With("node", hostname),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	return n
}

// waitFor polls cond every 20 ms until it is true or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func findPeer(n *microlink.Node, name string) (microlink.Peer, bool) {
	for _, p := range n.Peers() {
		if p.Name == name {
			return p, true
		}
	}
	return microlink.Peer{}, false
}
