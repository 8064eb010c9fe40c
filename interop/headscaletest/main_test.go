// Package headscaletest runs a microlink node and a real tailscaled against
// Headscale, the open-source control server, at the version pinned in the
// interop module's headscale directory. Headscale runs on loopback with a
// DERP map naming the lab's DERP and STUN servers; everything happens
// inside a network namespace of the package's own when run as root.
//
// The headscale binary comes from the directory named by
// $MICROLINK_HEADSCALE_BIN, or else the tests build it once with
// build-headscale.sh, which takes a few minutes on a cold cache.
package headscaletest

import (
	"log/slog"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microlink-go/microlink/interop/lab"
)

func TestMain(m *testing.M) { os.Exit(lab.RunInNetns(m)) }

// testLogger returns a logger that writes into the test log until the test
// ends, so a failing test shows what the node did.
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

// ourGoroutines returns the stacks of goroutines running microlink code.
func ourGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "github.com/microlink-go/microlink.") || strings.Contains(g, "github.com/microlink-go/microlink/internal/") {
			out = append(out, g)
		}
	}
	return out
}
