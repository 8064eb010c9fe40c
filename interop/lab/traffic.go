package lab

import (
	"context"
	"time"

	"github.com/microlink-go/microlink"
)

// TrafficBothWays waits until a TSMP ping (answered through WireGuard)
// from n to ts and one from ts to n have both succeeded, trying each once
// every 100 ms with a 1 s timeout, and returns how long that took. It fails
// t if within passes first. Fault tests use it to measure how fast traffic
// resumes.
func TrafficBothWays(t T, n *microlink.Node, ts *Tailscaled, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(within)
	var outErr, inErr error
	outOK, inOK := false, false
	try := func(f func(ctx context.Context) error) error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return f(ctx)
	}
	for {
		if !outOK {
			outErr = try(func(ctx context.Context) error {
				_, err := n.Ping(ctx, ts.IPv4().String(), microlink.PingTSMP)
				return err
			})
			outOK = outErr == nil
		}
		if !inOK {
			inErr = try(func(ctx context.Context) error {
				_, err := ts.Ping(ctx, n.IPv4(), "TSMP")
				return err
			})
			inOK = inErr == nil
		}
		if outOK && inOK {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no traffic with %s within %v: microlink→peer: %v; peer→microlink (at %v): %v",
				ts.Hostname, within, outErr, n.IPv4(), inErr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
