package tuntest

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/microlink-go/microlink/interop/lab"
	"tailscale.com/ipn/ipnstate"
)

// benchDuration is how long each throughput measurement sends:
// $TUN_BENCH_DURATION, or 5 s (1 s with -short).
func benchDuration() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("TUN_BENCH_DURATION")); err == nil {
		return d
	}
	if testing.Short() {
		return time.Second
	}
	return 5 * time.Second
}

// tcpThroughput sends as fast as it can for d from namespace from to a
// sink listening in namespace to on addr, and returns the bytes per
// second the sink received.
func tcpThroughput(b *testing.B, from, to string, addr netip.Addr, d time.Duration) float64 {
	b.Helper()
	ln := listenIn(b, to, netip.AddrPortFrom(addr, 5201))
	defer ln.Close()
	got := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- 0
			return
		}
		defer c.Close()
		n, _ := io.Copy(io.Discard, c)
		got <- n
	}()
	var c net.Conn
	err := lab.Within(from, func() (err error) {
		c, err = net.DialTimeout("tcp", netip.AddrPortFrom(addr, 5201).String(), 10*time.Second)
		return err
	})
	if err != nil {
		b.Fatalf("dial %v: %v", addr, err)
	}
	buf := make([]byte, 128<<10)
	start := time.Now()
	c.SetWriteDeadline(start.Add(d))
	for {
		if _, err := c.Write(buf); err != nil {
			break
		}
	}
	c.Close()
	n := <-got
	return float64(n) / time.Since(start).Seconds()
}

// waitDirectTS waits until tailscaled a has a direct path to peer, pinging
// it meanwhile.
func waitDirectTS(b *testing.B, a *lab.Tailscaled, peer string, ip netip.Addr) {
	b.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		a.Ping(ctx, ip, "TSMP")
		res, err := a.Ping(ctx, ip, "disco")
		cancel()
		if err == nil && res.Endpoint != "" {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.Fatalf("no direct path to %s", peer)
}

// BenchmarkTUNThroughput measures TCP between the host's own sockets
// through two TUN devices on a direct path: microlink's and a real
// tailscaled's, each way, next to two real tailscaleds. It reports MB/s
// (megabytes of payload per second) a→b and b→a, where a is microlink in
// the second pair. Run it with -benchtime=1x (and -count for more runs:
// each pair is then set up and measured that many times in a row). With $TUN_BENCH_DEBUG set it
// logs the namespaces' interface and kernel counters after each
// direction (drops at the TUN queue, UDP receive buffer errors).
func BenchmarkTUNThroughput(b *testing.B) {
	if os.Geteuid() != 0 || lab.TUNAvailable() != nil {
		b.Skip("needs root and TUN mode")
	}
	for _, pair := range []string{"tailscaled-tailscaled", "microlink-tailscaled"} {
		b.Run(pair, func(b *testing.B) {
			l := startLab(b)
			ha, hb := newHost(b, "a"), newHost(b, "b")
			tb := l.StartTailscaled(b, lab.TSOptions{Hostname: "ts-b", TUN: true, Netns: hb.NS})
			var aIP netip.Addr
			if pair == "tailscaled-tailscaled" {
				ta := l.StartTailscaled(b, lab.TSOptions{Hostname: "ts-a", TUN: true, Netns: ha.NS})
				aIP = ta.IPv4()
				waitDirectTS(b, ta, "ts-b", tb.IPv4())
			} else {
				d := lab.StartDaemon(b, lab.DaemonOptions{Hostname: "ml-a", ControlURL: l.ControlURL, AuthKey: l.AuthKey, Netns: ha.NS, Args: []string{"--tun"}})
				st, _ := d.Status()
				aIP, _ = addrs(st)
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				tb.WaitStatus(ctx, func(st *ipnstate.Status) bool { p := lab.FindPeer(st, "ml-a"); return p != nil && p.Relay != "" })
				cancel()
				waitDirectTS(b, tb, "ml-a", aIP)
				waitFor(b, 20*time.Second, "microlink's direct path", func() bool {
					st, err := d.Status()
					p, _ := st.Peer("ts-b")
					return err == nil && p.Path == "direct"
				})
			}
			for range b.N {
				ab := tcpThroughput(b, ha.NS, hb.NS, tb.IPv4(), benchDuration())
				if os.Getenv("TUN_BENCH_DEBUG") != "" {
					for _, ns := range []string{ha.NS, hb.NS} {
						b.Logf("%s:\n%s\n%s", ns, lab.MustRun(b, ns, "ip", "-s", "link"), lab.MustRun(b, ns, "nstat", "-a"))
					}
				}
				ba := tcpThroughput(b, hb.NS, ha.NS, aIP, benchDuration())
				if os.Getenv("TUN_BENCH_DEBUG") != "" {
					b.Logf("after b→a, %s:\n%s", ha.NS, lab.MustRun(b, ha.NS, "nstat", "-a"))
				}
				b.ReportMetric(ab/1e6, "MB/s-a→b")
				b.ReportMetric(ba/1e6, "MB/s-b→a")
			}
		})
	}
}

// BenchmarkTUNIdleRSS measures the resident memory of an idle "microlink
// up" with one peer, in TUN mode and in userspace mode.
func BenchmarkTUNIdleRSS(b *testing.B) {
	if os.Geteuid() != 0 || lab.TUNAvailable() != nil {
		b.Skip("needs root and TUN mode")
	}
	for _, mode := range []string{"userspace", "tun"} {
		b.Run(mode, func(b *testing.B) {
			l := startLab(b)
			hm, ht := newHost(b, "m"), newHost(b, "t")
			ts := l.StartTailscaled(b, lab.TSOptions{Hostname: "ts", TUN: true, Netns: ht.NS})
			var args []string
			if mode == "tun" {
				args = []string{"--tun"}
			}
			d := lab.StartDaemon(b, lab.DaemonOptions{Hostname: "ml", ControlURL: l.ControlURL, AuthKey: l.AuthKey, Netns: hm.NS, Args: args})
			st, _ := d.Status()
			ip, _ := addrs(st)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			ts.WaitStatus(ctx, func(st *ipnstate.Status) bool { p := lab.FindPeer(st, "ml"); return p != nil && p.Relay != "" })
			ts.PingRetry(ctx, ip, "TSMP", 5)
			cancel()
			for range b.N {
				time.Sleep(idleWait())
				rss, anon := rssOf(b, d)
				b.ReportMetric(float64(rss)/1e6, "MB-RSS")
				b.ReportMetric(float64(anon)/1e6, "MB-RssAnon")
			}
		})
	}
}

// idleWait is how long a node sits idle before its RSS is read, as in
// interop/bench: 15 s (2 s with -short).
func idleWait() time.Duration {
	if testing.Short() {
		return 2 * time.Second
	}
	return 15 * time.Second
}

// rssOf reads VmRSS and RssAnon of the daemon from /proc.
func rssOf(b *testing.B, d *lab.Daemon) (rss, anon int64) {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.PID()))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = v << 10
		case "RssAnon:":
			anon = v << 10
		}
	}
	return rss, anon
}
