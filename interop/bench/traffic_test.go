package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microlink-go/microlink/interop/lab"
	"tailscale.com/ipn/ipnstate"
)

// The idle traffic measurement gives each node a network namespace of its
// own, joined to the test's namespace (made by lab.RunInNetns, see
// TestMain) by a veth pair: the veth's byte counters then hold exactly the
// node's traffic. The lab's servers listen on labAddr in the test's
// namespace; node N's link is 198.18.N.0/24, the test's end .1, the
// node's .2.

// labAddr is the address of the lab's servers, on loopback of the test's
// namespace.
var labAddr = netip.MustParseAddr("198.18.0.1")

// trafficWindow is how long the idle nodes' traffic is counted.
func trafficWindow() time.Duration {
	if testing.Short() {
		return 10 * time.Second
	}
	// Ten of the minute-long keep-alive cycles of control and DERP, so
	// that one event more or less in the window moves the figure by
	// about a tenth.
	return 10 * time.Minute
}

var linkSeq atomic.Int32

// run runs an OS command and fails the benchmark if it fails.
func run(b *testing.B, name string, args ...string) {
	b.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		b.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// nodeLink is a node's namespace and the test's end of its veth pair.
type nodeLink struct {
	NS   string // the node's namespace
	Host string // the veth in the test's namespace
}

// newNodeLink creates a namespace whose only way out is a veth pair to
// the test's namespace. IPv6 is off on both ends, so that the kernel's
// own router solicitations and multicast reports are not counted as the
// node's. The namespace is deleted (with the veth) when the benchmark
// ends, failed or not.
func newNodeLink(b *testing.B, label string) nodeLink {
	b.Helper()
	n := int(linkSeq.Add(1))
	if n > 250 {
		b.Fatal("too many node links")
	}
	l := nodeLink{NS: fmt.Sprintf("mlb%d-%d%s", os.Getpid(), n, label), Host: fmt.Sprintf("vb%d", n)}
	run(b, "ip", "netns", "add", l.NS)
	b.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "delete", l.NS).CombinedOutput(); err != nil {
			b.Logf("ip netns delete %s: %v: %s", l.NS, err, out)
		}
	})
	run(b, "ip", "netns", "exec", l.NS, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	run(b, "ip", "-n", l.NS, "link", "set", "lo", "up")
	run(b, "ip", "link", "add", l.Host, "type", "veth", "peer", "name", "eth0", "netns", l.NS)
	if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+l.Host+"/disable_ipv6", []byte("1"), 0o644); err != nil {
		b.Fatal(err)
	}
	run(b, "ip", "addr", "add", fmt.Sprintf("198.18.%d.1/24", n), "dev", l.Host)
	run(b, "ip", "link", "set", l.Host, "up")
	run(b, "ip", "-n", l.NS, "addr", "add", fmt.Sprintf("198.18.%d.2/24", n), "dev", "eth0")
	run(b, "ip", "-n", l.NS, "link", "set", "eth0", "up")
	run(b, "ip", "-n", l.NS, "route", "add", "default", "via", fmt.Sprintf("198.18.%d.1", n))
	return l
}

// counters returns the bytes the node has sent and received so far: what
// the test's end of the veth received and sent. They count whole Ethernet
// frames, ARP included.
func (l nodeLink) counters(b *testing.B) (sent, received uint64) {
	b.Helper()
	read := func(name string) uint64 {
		data, err := os.ReadFile("/sys/class/net/" + l.Host + "/statistics/" + name)
		if err != nil {
			b.Fatal(err)
		}
		v, err := strconv.ParseUint(string(bytes.TrimSpace(data)), 10, 64)
		if err != nil {
			b.Fatal(err)
		}
		return v
	}
	return read("rx_bytes"), read("tx_bytes")
}

// setupHub puts the lab's address on loopback and lets the nodes'
// links reach each other.
func setupHub(b *testing.B) {
	b.Helper()
	out, err := exec.Command("ip", "addr", "add", labAddr.String()+"/32", "dev", "lo").CombinedOutput()
	if err != nil && !bytes.Contains(out, []byte("exists")) {
		b.Fatalf("ip addr add %v dev lo: %v: %s", labAddr, err, out)
	}
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
		b.Fatal(err)
	}
}

// trafficSkip says why the idle traffic cannot be measured here, or "".
func trafficSkip() string {
	if os.Geteuid() != 0 {
		return "not measured: needs root"
	}
	if !lab.InNetns() {
		return "not measured: needs the private network namespace of lab.RunInNetns (install iproute2)"
	}
	return ""
}

// BenchmarkNodeTraffic reports the bytes an idle node sends and receives
// per hour: control, DERP, disco, STUN and whatever else it does on its
// own. microlink and tailscaled (userspace networking) run at the same
// time in one lab, each in its own namespace, each the other's only peer;
// after both have seen each other and settled, their veths' counters are
// read over an idle window with no traffic between them. The
// sub-benchmarks report the figures of each.
func BenchmarkNodeTraffic(b *testing.B) {
	if why := trafficSkip(); why != "" {
		b.Skip(why)
	}
	setupHub(b)
	l := lab.Start(b, lab.Options{Logf: func(string, ...any) {}, ListenAddr: labAddr})
	mlLink := newNodeLink(b, "ml")
	tsLink := newNodeLink(b, "ts")

	ts := l.StartTailscaled(b, lab.TSOptions{Hostname: "idle-ts", Netns: tsLink.NS})
	ml := startMicrolinkIn(b, l, mlLink.NS, "idle-ml")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := ml.waitConnected(ctx, 1); err != nil {
		b.Fatal(err)
	}
	if _, err := ts.WaitStatus(ctx, func(st *ipnstate.Status) bool { return len(st.Peer) >= 1 }); err != nil {
		b.Fatal(err)
	}
	time.Sleep(settle())

	// Counters per protocol start now, so they cover the window only.
	var kinds *kindCounters
	if _, err := exec.LookPath("nft"); err == nil {
		kinds = countKinds(b, l, mlLink, tsLink)
	}
	window := trafficWindow()
	maps0 := ml.mapUpdates(b)
	mlTx0, mlRx0 := mlLink.counters(b)
	tsTx0, tsRx0 := tsLink.counters(b)
	start := time.Now()
	select {
	case <-ml.exited:
		b.Fatalf("microlink exited during the window: %v", ml.cmd.ProcessState)
	case <-time.After(window):
	}
	elapsed := time.Since(start)
	mlTx1, mlRx1 := mlLink.counters(b)
	tsTx1, tsRx1 := tsLink.counters(b)
	maps := ml.mapUpdates(b) - maps0
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	if st, err := ts.Status(sctx); err != nil || st.BackendState != "Running" {
		b.Fatalf("tailscaled not running after the window: %v", err)
	}

	var byKind map[string]uint64
	if kinds != nil {
		byKind = kinds.read(b)
	}

	perHour := func(d uint64) float64 { return float64(d) * float64(time.Hour) / float64(elapsed) }
	report := func(impl string, link nodeLink, tx, rx uint64) {
		b.Run("impl="+impl, func(b *testing.B) {
			if impl == "microlink" {
				b.ReportMetric(float64(maps), "netmaps")
			}
			b.ReportMetric(perHour(tx), "sent-B/h")
			b.ReportMetric(perHour(rx), "recv-B/h")
			b.ReportMetric(perHour(tx+rx), "B/h")
			b.ReportMetric(perHour(tx+rx)*24/1e6, "MB/day")
			b.ReportMetric(elapsed.Seconds(), "window-s")
			if byKind != nil {
				for _, k := range trafficKinds {
					b.ReportMetric(perHour(byKind[link.Host+"_"+k]), k+"-B/h")
				}
			}
		})
	}
	report("microlink", mlLink, mlTx1-mlTx0, mlRx1-mlRx0)
	report("tailscaled", tsLink, tsTx1-tsTx0, tsRx1-tsRx0)
}

// trafficKinds are the kinds of traffic counted apart, both ways
// together, in IP bytes (without Ethernet headers).
var trafficKinds = []string{"control", "derp", "stun", "peer", "other"}

// kindCounters are nftables counters in the test's namespace that split
// each node's traffic by the lab server it goes to (control, DERP, STUN),
// by whether it goes to the other node (direct disco and WireGuard: peer)
// and the rest (other).
type kindCounters struct{}

// countKinds loads the counters; the table goes when the benchmark ends.
func countKinds(b *testing.B, l *lab.Lab, links ...nodeLink) *kindCounters {
	b.Helper()
	port := func(raw string) string {
		u, err := url.Parse(raw)
		if err != nil || u.Port() == "" {
			b.Fatalf("no port in %q", raw)
		}
		return u.Port()
	}
	ctl, derp, stun := port(l.ControlURL), port(l.DERPURL), strconv.Itoa(int(l.STUNAddr.Port()))
	var decl, in, out, fwd strings.Builder
	for _, k := range links {
		for _, kind := range trafficKinds {
			fmt.Fprintf(&decl, "\tcounter %s_%s {}\n", k.Host, kind)
		}
		h := k.Host
		fmt.Fprintf(&in, "\t\tiifname %q tcp dport %s counter name %s_control accept\n", h, ctl, h)
		fmt.Fprintf(&in, "\t\tiifname %q tcp dport %s counter name %s_derp accept\n", h, derp, h)
		fmt.Fprintf(&in, "\t\tiifname %q udp dport %s counter name %s_stun accept\n", h, stun, h)
		fmt.Fprintf(&in, "\t\tiifname %q counter name %s_other\n", h, h)
		fmt.Fprintf(&out, "\t\toifname %q tcp sport %s counter name %s_control accept\n", h, ctl, h)
		fmt.Fprintf(&out, "\t\toifname %q tcp sport %s counter name %s_derp accept\n", h, derp, h)
		fmt.Fprintf(&out, "\t\toifname %q udp sport %s counter name %s_stun accept\n", h, stun, h)
		fmt.Fprintf(&out, "\t\toifname %q counter name %s_other\n", h, h)
		fmt.Fprintf(&fwd, "\t\tiifname %q counter name %s_peer\n", h, h)
		fmt.Fprintf(&fwd, "\t\toifname %q counter name %s_peer\n", h, h)
	}
	script := fmt.Sprintf(`table inet mlbench {
%s	chain input {
		type filter hook input priority filter; policy accept;
%s	}
	chain output {
		type filter hook output priority filter; policy accept;
%s	}
	chain forward {
		type filter hook forward priority filter; policy accept;
%s	}
}
`, decl.String(), in.String(), out.String(), fwd.String())
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("nft: %v\n%s\n%s", err, out, script)
	}
	b.Cleanup(func() { exec.Command("nft", "delete", "table", "inet", "mlbench").Run() })
	return &kindCounters{}
}

// read returns the bytes of every counter by name.
func (*kindCounters) read(b *testing.B) map[string]uint64 {
	b.Helper()
	out, err := exec.Command("nft", "-j", "list", "counters", "table", "inet", "mlbench").Output()
	if err != nil {
		b.Fatalf("nft list counters: %v", err)
	}
	var list struct {
		Nftables []struct {
			Counter *struct {
				Name  string `json:"name"`
				Bytes uint64 `json:"bytes"`
			} `json:"counter"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(out, &list); err != nil {
		b.Fatalf("nft counters: %v\n%s", err, out)
	}
	m := map[string]uint64{}
	for _, x := range list.Nftables {
		if x.Counter != nil {
			m[x.Counter.Name] = x.Counter.Bytes
		}
	}
	return m
}
