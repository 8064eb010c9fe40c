package examplestest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/microlink-go/microlink"
	"github.com/microlink-go/microlink/interop/lab"
	"tailscale.com/ipn/ipnstate"
)

// nodeArgs are the flags that point an example at the lab. With
// MICROLINK_TEST_DEBUG set, the example logs microlink's debug messages,
// shown if the test fails.
func nodeArgs(t *testing.T, l *lab.Lab, hostname string) []string {
	args := []string{"-authkey", l.AuthKey, "-control-url", l.ControlURL, "-hostname", hostname,
		"-statedir", t.TempDir(), "-port", "-1", "-timeout", "20s"}
	if os.Getenv("MICROLINK_TEST_DEBUG") != "" {
		args = append(args, "-v")
	}
	return args
}

// tailnetAddrs returns the addresses the real peer sees for hostname.
func tailnetAddrs(t *testing.T, ts *lab.Tailscaled, hostname string) []netip.Addr {
	t.Helper()
	p, err := ts.WaitPeer(testCtx(t, 10*time.Second), hostname)
	if err != nil {
		t.Fatal(err)
	}
	return p.TailscaleIPs
}

var ipv4Line = regexp.MustCompile(`^\s+IPv4\s+(100\.64\.\d+\.\d+)$`)

// TestBasicConnect: basic_connect joins, prints the address control gave
// it and lists the real peer with its address, online, then exits 0.
func TestBasicConnect(t *testing.T) {
	l := startLab(t)
	ts := l.StartTailscaled(t, lab.TSOptions{Hostname: "real-peer", NeverDirect: true})
	bin := build(t, examples+"basic_connect")

	p := start(t, "basic_connect", bin, nil, nodeArgs(t, l, "basic-connect")...)
	if err := p.wait(t, 20*time.Second); err != nil {
		t.Fatalf("basic_connect: %v", err)
	}
	out := p.output()
	var self netip.Addr
	for _, line := range out {
		if m := ipv4Line.FindStringSubmatch(line); m != nil {
			self = netip.MustParseAddr(m[1])
		}
	}
	if !self.IsValid() {
		t.Fatalf("no IPv4 line in:\n%s", strings.Join(out, "\n"))
	}
	if addrs := tailnetAddrs(t, ts, "basic-connect"); !slices.Contains(addrs, self) {
		t.Fatalf("basic_connect printed %v; the real peer knows it as %v", self, addrs)
	}
	if !slices.Contains(out, "peers (1):") {
		t.Fatalf("no peer count line:\n%s", strings.Join(out, "\n"))
	}
	found := false
	for _, line := range out {
		f := strings.Fields(line)
		if len(f) >= 4 && f[0] == "real-peer" {
			found = true
			if !strings.Contains(f[1], ts.IPv4().String()) || f[2] != "yes" {
				t.Errorf("real-peer row %q: want address %v, online yes", line, ts.IPv4())
			}
		}
	}
	if !found {
		t.Fatalf("real-peer not listed:\n%s", strings.Join(out, "\n"))
	}
}

// TestBasicConnectWait: configured by the TS_ environment variables alone,
// basic_connect -wait reports a peer that joins later, and stops cleanly
// on SIGTERM.
func TestBasicConnectWait(t *testing.T) {
	l := startLab(t)
	l.StartTailscaled(t, lab.TSOptions{Hostname: "real-peer", NeverDirect: true})
	bin := build(t, examples+"basic_connect")

	env := labEnv("TS_AUTHKEY="+l.AuthKey, "TS_CONTROL_URL="+l.ControlURL, "TS_HOSTNAME=watcher",
		"TS_STATE_DIR="+t.TempDir(), "TS_PORT=-1")
	p := start(t, "basic_connect -wait", bin, env, "-wait", "-timeout", "20s")
	p.waitLine(t, 20*time.Second, regexp.MustCompile(`^joined the tailnet as watcher`))
	p.waitLine(t, 5*time.Second, regexp.MustCompile(`^watching for changes`))

	late := l.StartTailscaled(t, lab.TSOptions{Hostname: "late-peer", NeverDirect: true})
	p.waitLine(t, 10*time.Second, regexp.MustCompile(`^peer joined: late-peer `+regexp.QuoteMeta(late.IPv4().String())+`,`))
	p.stop(t)
}

// TestPingPong: a real tailscaled pings ping_pong (disco and TSMP, through
// the DERP relay), and ping_pong's own disco pings of the real peer print
// a latency.
func TestPingPong(t *testing.T) {
	l := startLab(t)
	ts := l.StartTailscaled(t, lab.TSOptions{Hostname: "real-peer", NeverDirect: true})
	bin := build(t, examples+"ping_pong")

	p := start(t, "ping_pong", bin, nil, append(nodeArgs(t, l, "ping-pong"), "-interval", "500ms")...)
	m := p.waitLine(t, 20*time.Second, regexp.MustCompile(`^up as ping-pong\S* \((100\.64\.\d+\.\d+)\)`))
	self := netip.MustParseAddr(m[1])

	m = p.waitLine(t, 10*time.Second, regexp.MustCompile(`^disco pong from real-peer \(`+regexp.QuoteMeta(ts.IPv4().String())+`\) via (\S+) in (\S+)$`))
	if m[1] != "DERP(900)" {
		t.Errorf("ping_pong reached the real peer via %s, want DERP(900): it never goes direct", m[1])
	}
	if d, err := time.ParseDuration(m[2]); err != nil || d <= 0 {
		t.Errorf("latency %q: %v", m[2], err)
	}

	ctx := testCtx(t, 15*time.Second)
	// The real peer can reach ping_pong once control told it its home region.
	if _, err := ts.WaitStatus(ctx, func(st *ipnstate.Status) bool {
		peer := lab.FindPeer(st, "ping-pong")
		return peer != nil && peer.Relay != ""
	}); err != nil {
		t.Fatalf("real peer never learned ping_pong's home DERP: %v", err)
	}
	for _, typ := range []string{"disco", "TSMP"} {
		res, err := ts.PingRetry(ctx, self, typ, 5)
		if err != nil {
			t.Fatalf("real peer %s ping of ping_pong at %v: %v", typ, self, err)
		}
		if res.NodeName == "" || !strings.HasPrefix(res.NodeName, "ping-pong") {
			t.Errorf("%s pong from %q, want ping-pong", typ, res.NodeName)
		}
		t.Logf("real peer %s ping of ping_pong: %v ms via %s%s", typ, res.LatencySeconds*1000, res.DERPRegionCode, res.Endpoint)
	}
	p.stop(t)
}

var readingLine = regexp.MustCompile(`^reading node=(\S+) seq=(\d+) time=(\S+) temperature_c=(-?[\d.]+) uptime_s=([\d.]+) from=(\S+) (\S+)`)

// TestSensorNode: the collector prints valid readings from sensor_node with
// increasing sequence numbers, and rejects a datagram that is not a
// reading without stopping.
func TestSensorNode(t *testing.T) {
	l := startLab(t)
	collectorBin := build(t, examples+"sensor_node/collector")
	sensorBin := build(t, examples+"sensor_node")

	collector := start(t, "collector", collectorBin, nil, append(nodeArgs(t, l, "collector"), "-listen", "9999")...)
	m := collector.waitLine(t, 20*time.Second, regexp.MustCompile(`^collector \S+ listening on (100\.64\.\d+\.\d+):9999$`))
	collectorIP := netip.MustParseAddr(m[1])

	sensor := start(t, "sensor_node", sensorBin, nil,
		append(nodeArgs(t, l, "sensor-1"), "-collector", "collector:9999", "-interval", "300ms")...)

	var seqs []uint64
	collector.waitLines(t, 20*time.Second, "two readings from sensor-1", func(lines []string) bool {
		seqs = seqs[:0]
		for _, line := range lines {
			m := readingLine.FindStringSubmatch(line)
			if m == nil || m[1] != "sensor-1" {
				continue
			}
			if m[6] != "sensor-1" {
				t.Fatalf("reading attributed to tailnet peer %q: %s", m[6], line)
			}
			seq, _ := strconv.ParseUint(m[2], 10, 64)
			seqs = append(seqs, seq)
		}
		return len(seqs) >= 2
	})
	for i := 1; i < len(seqs); i++ {
		if seqs[i] <= seqs[i-1] {
			t.Fatalf("sequence numbers not increasing: %v", seqs)
		}
	}
	t.Logf("collector got readings %v", seqs)
	if os.Getenv("MICROLINK_TEST_DEBUG") != "" {
		t.Fail()
	}

	// Any tailnet node may send to the collector; garbage is reported.
	n := joinNode(t, l, "prober")
	ctx := testCtx(t, 10*time.Second)
	if err := n.SendUDP(ctx, netip.AddrPortFrom(collectorIP, 9999).String(), []byte(`{"node":"prober","seq":0}`)); err != nil {
		t.Fatal(err)
	}
	collector.waitLine(t, 10*time.Second, regexp.MustCompile(`^invalid reading from=prober 100\.64\.\d+\.\d+:\d+: missing "time"$`))
	// and readings keep coming after it.
	before := len(collector.output())
	collector.waitLines(t, 5*time.Second, "another reading", func(lines []string) bool {
		for _, line := range lines[min(before, len(lines)):] {
			if readingLine.MatchString(line) {
				return true
			}
		}
		return false
	})

	sensor.stop(t)
	collector.stop(t)
}

// TestSensorNodeCount: with -count, sensor_node sends that many readings and
// exits by itself, even with no collector in the tailnet.
func TestSensorNodeCount(t *testing.T) {
	l := startLab(t)
	bin := build(t, examples+"sensor_node")
	p := start(t, "sensor_node", bin, nil, append(nodeArgs(t, l, "sensor-2"), "-interval", "100ms", "-count", "3")...)
	if err := p.wait(t, 20*time.Second); err != nil {
		t.Fatalf("sensor_node -count 3: %v", err)
	}
	p.mu.Lock()
	logs := p.stderr.String()
	p.mu.Unlock()
	if !strings.Contains(logs, "cannot send readings") || !strings.Contains(logs, "readings=3") {
		t.Fatalf("want a warning about the missing collector and 3 readings in the log:\n%s", logs)
	}
}

// joinNode joins an in-process microlink node to the lab.
func joinNode(t *testing.T, l *lab.Lab, hostname string) *microlink.Node {
	t.Helper()
	n, err := microlink.New(microlink.Config{
		AuthKey: l.AuthKey, ControlURL: l.ControlURL, Hostname: hostname, Port: -1,
		Logger: quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	if err := n.Start(testCtx(t, 15*time.Second)); err != nil {
		t.Fatalf("joining as %s: %v", hostname, err)
	}
	return n
}

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestHTTPService: http_service fetches a page from an HTTP server on the
// real peer by its MagicDNS name, through the tailnet; then the real peer
// (this test process, whose traffic to 100.x goes through tailscaled's
// TUN) fetches http_service's page, which names the caller by WhoIs.
func TestHTTPService(t *testing.T) {
	if err := lab.TUNAvailable(); err != nil {
		t.Skip(err)
	}
	l := startLab(t)
	ts := l.StartTailscaled(t, lab.TSOptions{Hostname: "real-peer", TUN: true})
	peerLn, err := net.Listen("tcp", net.JoinHostPort(ts.IPv4().String(), "8081"))
	if err != nil {
		t.Fatal(err)
	}
	peerSrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from the real peer\n")
	})}
	go peerSrv.Serve(peerLn)
	t.Cleanup(func() { peerSrv.Close() })

	bin := build(t, examples+"http_service")
	p := start(t, "http_service", bin, nil, append(nodeArgs(t, l, "web-svc"), "-listen", "8080", "-fetch", "http://real-peer:8081/hi")...)
	m := p.waitLine(t, 20*time.Second, regexp.MustCompile(`^serving http://web-svc\S*:8080/ \((100\.64\.\d+\.\d+):8080\)$`))
	self := m[1]
	p.waitLine(t, 20*time.Second, regexp.MustCompile(`^fetched http://real-peer:8081/hi: 200 OK, 25 bytes: hello from the real peer$`))

	ctx := testCtx(t, 20*time.Second)
	var body string
	err = retryUntil(ctx, func() error {
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+self+":8080/who", nil)
		res, err := (&http.Client{Timeout: 3 * time.Second}).Do(req)
		if err != nil {
			return err
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		body = string(b)
		if res.StatusCode != 200 {
			return fmt.Errorf("status %d: %s", res.StatusCode, b)
		}
		return err
	})
	if err != nil {
		t.Fatalf("GET from the real peer: %v", err)
	}
	if !strings.HasPrefix(body, "hello, real-peer (") || !strings.HasSuffix(body, "): you asked for /who\n") {
		t.Fatalf("page %q", body)
	}
	p.waitLine(t, 5*time.Second, regexp.MustCompile(`^request from real-peer \(.*\) `+regexp.QuoteMeta(ts.IPv4().String())+`:\d+ GET /who$`))
	p.stop(t)
}

// retryUntil calls f until it succeeds or ctx ends.
func retryUntil(ctx context.Context, f func() error) error {
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(200 * time.Millisecond):
		}
	}
}
