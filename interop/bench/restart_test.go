package bench

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/microlink-go/microlink"
	"github.com/microlink-go/microlink/interop/lab"
	"tailscale.com/tstest/integration/testcontrol"
)

// BenchmarkRestart reports how soon traffic with a real tailscaled comes
// back after a node restarts with its state (same node key; new disco key
// and, as the lab starts both with any free port, new UDP port): a
// microlink node (in process), and tailscaled itself for reference. Each
// iteration is one restart, after which both sides send TSMP pings to the
// other every 100 ms (each given 1 s) for 20 s. out-ms and in-ms are the
// mean times from the restarted node being up (Start returned, or
// tailscaled Running) to the first ping answered from it and to it; gap-ms
// is the mean longest time either way went without an answered ping after
// that. Run it with -benchtime=Nx for N restarts.
func BenchmarkRestart(b *testing.B) {
	// tailscaled logs in again at every start without an auth key.
	newLab := func(b *testing.B) *lab.Lab {
		return lab.Start(b, lab.Options{Logf: func(string, ...any) {}, ConfigureControl: func(s *testcontrol.Server) { s.RequireAuthKey = "" }})
	}
	b.Run("impl=microlink", func(b *testing.B) {
		l := newLab(b)
		peer := l.StartTailscaled(b, lab.TSOptions{Hostname: "peer"})
		dir := b.TempDir()
		var n *microlink.Node
		start := func() {
			n = lab.StartNode(b, lab.NodeOptions{ControlURL: l.ControlURL, AuthKey: l.AuthKey, Hostname: "restarted", StateDir: dir})
		}
		start()
		var r restartRuns
		for range b.N {
			lab.TrafficBothWays(b, n, peer, 30*time.Second)
			time.Sleep(time.Second)
			n.Close()
			start()
			r.add(measureRestart(
				func(ctx context.Context) error {
					_, err := n.Ping(ctx, peer.IPv4().String(), microlink.PingTSMP)
					return err
				},
				func(ctx context.Context) error { _, err := peer.Ping(ctx, n.IPv4(), "TSMP"); return err }))
		}
		r.report(b)
	})
	b.Run("impl=tailscaled", func(b *testing.B) {
		l := newLab(b)
		peer := l.StartTailscaled(b, lab.TSOptions{Hostname: "peer"})
		d := l.StartTailscaled(b, lab.TSOptions{Hostname: "restarted"})
		var r restartRuns
		for range b.N {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			waitPing(ctx, b, peer, d.IPv4())
			waitPing(ctx, b, d, peer.IPv4())
			cancel()
			time.Sleep(time.Second)
			d.Restart(b)
			r.add(measureRestart(
				func(ctx context.Context) error { _, err := d.Ping(ctx, peer.IPv4(), "TSMP"); return err },
				func(ctx context.Context) error { _, err := peer.Ping(ctx, d.IPv4(), "TSMP"); return err }))
		}
		r.report(b)
	})
}

type restartRun struct{ out, in, gap time.Duration }

type restartRuns []restartRun

func (rs *restartRuns) add(r restartRun) { *rs = append(*rs, r) }

func (rs restartRuns) report(b *testing.B) {
	var out, in, gap time.Duration
	for _, r := range rs {
		if r.out < 0 || r.in < 0 {
			b.Fatalf("no traffic within 20 s of a restart: %+v", r)
		}
		out, in, gap = out+r.out, in+r.in, gap+r.gap
	}
	n := time.Duration(len(rs)) * time.Millisecond
	b.ReportMetric(float64(out/n), "out-ms")
	b.ReportMetric(float64(in/n), "in-ms")
	b.ReportMetric(float64(gap/n), "gap-ms")
}

// measureRestart pings with out (from the restarted node) and in (to it)
// every 100 ms for 20 s, both at once, and returns when each was first
// answered (-1 if never) and the longest time without an answer after
// that, either way.
func measureRestart(out, in func(context.Context) error) restartRun {
	const watch = 20 * time.Second
	start := time.Now()
	probe := func(ping func(context.Context) error) (first, gap time.Duration) {
		first = -1
		var last time.Time
		for time.Since(start) < watch {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			err := ping(ctx)
			cancel()
			if err == nil {
				if first < 0 {
					first = time.Since(start)
				} else {
					gap = max(gap, time.Since(last))
				}
				last = time.Now()
			}
			time.Sleep(100 * time.Millisecond)
		}
		if first >= 0 {
			gap = max(gap, time.Since(last))
		}
		return first, gap
	}
	var r restartRun
	var outGap, inGap time.Duration
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); r.out, outGap = probe(out) }()
	go func() { defer wg.Done(); r.in, inGap = probe(in) }()
	wg.Wait()
	r.gap = max(outGap, inGap)
	return r
}
