package lab

import (
	"cmp"
	"context"
	"runtime"
	"strings"
	"time"

	"github.com/microlink-go/microlink"
)

// NodeOptions says how StartNode starts a microlink node.
type NodeOptions struct {
	ControlURL, AuthKey, Hostname string
	StateDir                      string        // default: a new temporary directory
	Timeout                       time.Duration // for Start; default 20 s
	TCP                           microlink.TCPConfig
	// Port is the node's UDP port; 0 means any free port.
	Port int
	// Configure, if set, changes the node's Config before New, for
	// fields NodeOptions does not name (routes, exit node).
	Configure func(*microlink.Config)
}

// StartNode starts a microlink node that logs into t, on an ephemeral UDP
// port, and waits until Start returns; t fails if it does not. The node
// is closed when t ends.
func StartNode(t T, o NodeOptions) *microlink.Node {
	t.Helper()
	if o.StateDir == "" {
		o.StateDir = t.TempDir()
	}
	if o.Timeout <= 0 {
		o.Timeout = 20 * time.Second
	}
	cfg := microlink.Config{
		AuthKey:    o.AuthKey,
		ControlURL: o.ControlURL,
		Hostname:   o.Hostname,
		StateDir:   o.StateDir,
		Port:       cmp.Or(o.Port, -1),
		TCP:        o.TCP,
		Logger:     Logger(t).With("node", o.Hostname),
	}
	if o.Configure != nil {
		o.Configure(&cfg)
	}
	n, err := microlink.New(cfg)
	if err != nil {
		t.Fatalf("microlink.New: %v", err)
	}
	t.Cleanup(func() { n.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), o.Timeout)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		t.Fatalf("Start of %s against %s: %v", o.Hostname, o.ControlURL, err)
	}
	return n
}

// PingRetry pings target from n with up to five tries of 3 s each, for
// the first pings after a node joins, which may find no path yet.
func PingRetry(ctx context.Context, n *microlink.Node, target string, typ microlink.PingType) (microlink.PingResult, error) {
	return retry(ctx, 5, 0, func(ctx context.Context) (microlink.PingResult, error) {
		return n.Ping(ctx, target, typ)
	})
}

// retry calls ping with a 3 s timeout up to tries times, pause apart,
// until it succeeds or ctx ends. It returns the first success or the
// last error.
func retry[T any](ctx context.Context, tries int, pause time.Duration, ping func(context.Context) (T, error)) (res T, err error) {
	for i := range tries {
		if i > 0 {
			time.Sleep(pause)
		}
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		res, err = ping(pctx)
		cancel()
		if err == nil || ctx.Err() != nil {
			break
		}
	}
	return res, err
}

// MicrolinkGoroutines returns the stacks of the goroutines running
// microlink's code, for checks that Close leaves none behind.
func MicrolinkGoroutines() []string {
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

// WaitNoMicrolinkGoroutines waits up to d for the goroutines running
// microlink's code to end, after a test closed its nodes, and fails t with
// their stacks if some are left.
func WaitNoMicrolinkGoroutines(t T, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for g := MicrolinkGoroutines(); len(g) != 0; g = MicrolinkGoroutines() {
		if time.Now().After(deadline) {
			t.Fatalf("%d microlink goroutines left after Close:\n%s", len(g), strings.Join(g, "\n\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
