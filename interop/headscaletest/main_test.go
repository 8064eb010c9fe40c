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
	"testing"
	"time"

	"github.com/microlink-go/microlink/interop/lab"
)

func TestMain(m *testing.M) { os.Exit(lab.RunInNetns(m)) }

// testLogger returns a logger that writes into the test log.
func testLogger(t *testing.T) *slog.Logger { return lab.Logger(t) }

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	lab.WaitFor(t, d, what, cond)
}
