package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/microlink-go/microlink/interop/lab"
	"tailscale.com/ipn/ipnstate"
)

// The node measurements run each node as a process of its own so that its
// RSS is its own: `microlink up` from MICROLINK_BIN (built here if unset)
// and tailscaled from the lab's binaries, in userspace-networking mode.
// They take a minute or more each; run them with -benchtime=1x, as
// scripts/bench.sh does. -short shortens the settling times.

// settle is how long a node sits idle before its RSS is read.
func settle() time.Duration {
	if testing.Short() {
		return 2 * time.Second
	}
	return 15 * time.Second
}

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

func microlinkBin(b *testing.B) string {
	if p := os.Getenv("MICROLINK_BIN"); p != "" {
		return p
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "microlink-bench-bin")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "microlink")
		out, err := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", builtBin,
			"github.com/microlink-go/microlink/cmd/microlink").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build ./cmd/microlink: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		b.Fatal(buildErr)
	}
	return builtBin
}

// mlProc is a running `microlink up`.
type mlProc struct {
	bin, dir string
	cmd      *exec.Cmd
	log      bytes.Buffer
	exited   chan struct{}
}

func startMicrolink(b *testing.B, l *lab.Lab, hostname string) *mlProc {
	return startMicrolinkIn(b, l, "", hostname)
}

// startMicrolinkIn starts `microlink up` in the network namespace netns
// ("" for the test's own). Its local API socket is on the shared file
// system, so status works from the test's namespace.
func startMicrolinkIn(b *testing.B, l *lab.Lab, netns, hostname string) *mlProc {
	b.Helper()
	p := &mlProc{bin: microlinkBin(b), dir: b.TempDir(), exited: make(chan struct{})}
	args := []string{"up", "--authkey", l.AuthKey, "--hostname", hostname,
		"--login-server", l.ControlURL, "--statedir", p.dir}
	if netns == "" {
		p.cmd = exec.Command(p.bin, args...)
	} else {
		// ip netns exec execs the binary in place: the PID is microlink's.
		p.cmd = exec.Command("ip", append([]string{"netns", "exec", netns, p.bin}, args...)...)
	}
	p.cmd.Stdout = &lockedWriter{w: &p.log}
	p.cmd.Stderr = p.cmd.Stdout
	if err := p.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.exited) }()
	b.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(5 * time.Second):
			p.cmd.Process.Kill()
			<-p.exited
		}
		if b.Failed() {
			b.Logf("microlink %s log:\n%s", hostname, p.cmd.Stdout.(*lockedWriter).String())
		}
	})
	return p
}

type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}

func (w *lockedWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.String()
}

type mlStatus struct {
	State string `json:"BackendState"` // "Running" once connected
	Self  struct {
		Addresses []string `json:"TailscaleIPs"`
	}
	Peers map[string]struct {
		Name string `json:"HostName"`
	} `json:"Peer"`
	Stats struct {
		MapUpdates uint64 `json:"mapUpdates"`
	}
}

// mapUpdates returns how many netmap messages the node has applied.
func (p *mlProc) mapUpdates(b *testing.B) uint64 {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := p.status(ctx)
	if err != nil {
		b.Fatalf("microlink status: %v", err)
	}
	return st.Stats.MapUpdates
}

func (p *mlProc) status(ctx context.Context) (mlStatus, error) {
	var st mlStatus
	out, err := exec.CommandContext(ctx, p.bin, "status", "--json", "--statedir", p.dir).Output()
	if err != nil {
		return st, err
	}
	err = json.Unmarshal(out, &st)
	return st, err
}

// waitUp waits for the line `microlink up` logs the moment it is
// Connected, as `tailscale up` returns when tailscaled is Running, and
// returns the node's IPv4 address. Reading the log, unlike polling the
// status command, adds no delay of its own to the start time.
func (p *mlProc) waitUp(ctx context.Context) (netip.Addr, error) {
	for {
		log := p.cmd.Stdout.(*lockedWriter).String()
		for _, line := range strings.Split(log, "\n") {
			if !strings.Contains(line, " msg=up ") {
				continue
			}
			for _, f := range strings.Fields(line) {
				if v, ok := strings.CutPrefix(f, "ipv4="); ok {
					return netip.ParseAddr(v)
				}
			}
		}
		select {
		case <-p.exited:
			return netip.Addr{}, fmt.Errorf("microlink exited: %v\n%s", p.cmd.ProcessState, log)
		case <-ctx.Done():
			return netip.Addr{}, fmt.Errorf("microlink not up: %v\n%s", ctx.Err(), log)
		case <-time.After(time.Millisecond):
		}
	}
}

// waitConnected waits until the node is Connected with at least peers
// peers and returns its IPv4 address.
func (p *mlProc) waitConnected(ctx context.Context, peers int) (netip.Addr, error) {
	var last mlStatus
	var lastErr error
	for {
		select {
		case <-p.exited:
			return netip.Addr{}, fmt.Errorf("microlink exited: %v", p.cmd.ProcessState)
		default:
		}
		st, err := p.status(ctx)
		if err == nil && st.State == "Running" && len(st.Peers) >= peers {
			for _, a := range st.Self.Addresses {
				if ip, err := netip.ParseAddr(a); err == nil && ip.Is4() {
					return ip, nil
				}
			}
		}
		last, lastErr = st, err
		select {
		case <-ctx.Done():
			return netip.Addr{}, fmt.Errorf("microlink not connected with %d peers: state %q, %d peers, %v", peers, last.State, len(last.Peers), lastErr)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// procMemory is what /proc/PID/status says about a process's memory, in MB.
type procMemory struct {
	RSS  float64 // VmRSS: resident set
	HWM  float64 // VmHWM: the highest RSS so far
	Anon float64 // RssAnon: private memory (heap, stacks, runtime)
	File float64 // RssFile: resident pages of mapped files (the binary): clean, shared, reclaimable
}

// memory reads the memory figures of a process.
func memory(pid int) (procMemory, error) {
	var m procMemory
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return m, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		mb := kb * 1024 / 1e6
		switch f[0] {
		case "VmRSS:":
			m.RSS = mb
		case "VmHWM:":
			m.HWM = mb
		case "RssAnon:":
			m.Anon = mb
		case "RssFile:":
			m.File = mb
		}
	}
	if m.RSS == 0 {
		return m, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
	}
	return m, nil
}

// tailscaledPID finds the tailscaled serving socket.
func tailscaledPID(socket string) (int, error) {
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(cmdline), "\x00")
		if filepath.Base(args[0]) != "tailscaled" {
			continue
		}
		for _, a := range args {
			if a == "--socket="+socket {
				return pid, nil
			}
		}
	}
	return 0, fmt.Errorf("no tailscaled process with --socket=%s", socket)
}

func quietLab(b *testing.B) *lab.Lab {
	return lab.Start(b, lab.Options{Logf: func(string, ...any) {}})
}

// addFakePeers adds n nodes to the lab's control server that exist only
// there, so that the measured node has n peers in its netmap.
func addFakePeers(l *lab.Lab, n int) {
	for range n {
		l.Control.AddFakeNode()
	}
}

// BenchmarkNodeIdle reports the resident memory of an idle node that has
// joined a tailnet of the given number of peers and settled.
func BenchmarkNodeIdle(b *testing.B) {
	for _, peers := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("peers=%d", peers), func(b *testing.B) {
			b.Run("impl=microlink", func(b *testing.B) {
				l := quietLab(b)
				addFakePeers(l, peers)
				p := startMicrolink(b, l, "bench-idle")
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer cancel()
				if _, err := p.waitConnected(ctx, peers); err != nil {
					b.Fatal(err)
				}
				time.Sleep(settle())
				reportMemory(b, p.cmd.Process.Pid)
			})
			b.Run("impl=tailscaled", func(b *testing.B) {
				l := quietLab(b)
				addFakePeers(l, peers)
				d := l.StartTailscaled(b, lab.TSOptions{Hostname: "bench-idle"})
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer cancel()
				if _, err := d.WaitStatus(ctx, func(st *ipnstate.Status) bool { return len(st.Peer) >= peers }); err != nil {
					b.Fatal(err)
				}
				pid, err := tailscaledPID(d.Socket)
				if err != nil {
					b.Fatal(err)
				}
				time.Sleep(settle())
				reportMemory(b, pid)
			})
		})
	}
}

func reportMemory(b *testing.B, pid int) {
	m, err := memory(pid)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(m.RSS, "rss-MB")
	b.ReportMetric(m.HWM, "hwm-MB")
	b.ReportMetric(m.Anon, "anon-MB")
	b.ReportMetric(m.File, "file-MB")
}

// BenchmarkNodeStart reports the time from launching a node until a real
// tailscaled peer gets an answer to a TSMP ping through WireGuard.
func BenchmarkNodeStart(b *testing.B) {
	b.Run("impl=microlink", func(b *testing.B) {
		l := quietLab(b)
		pinger := l.StartTailscaled(b, lab.TSOptions{Hostname: "pinger"})
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		microlinkBin(b) // not part of the start time if it has to be built
		start := time.Now()
		p := startMicrolink(b, l, "bench-start")
		ip, err := p.waitUp(ctx)
		if err != nil {
			b.Fatal(err)
		}
		waitPing(ctx, b, pinger, ip)
		b.ReportMetric(float64(time.Since(start).Milliseconds()), "start-ms")
	})
	b.Run("impl=tailscaled", func(b *testing.B) {
		l := quietLab(b)
		pinger := l.StartTailscaled(b, lab.TSOptions{Hostname: "pinger"})
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		start := time.Now()
		d := l.StartTailscaled(b, lab.TSOptions{Hostname: "bench-start"})
		waitPing(ctx, b, pinger, d.IPv4())
		b.ReportMetric(float64(time.Since(start).Milliseconds()), "start-ms")
	})
}

func waitPing(ctx context.Context, b *testing.B, pinger *lab.Tailscaled, ip netip.Addr) {
	b.Helper()
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := pinger.Ping(pctx, ip, "TSMP")
		cancel()
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			b.Fatalf("TSMP ping to %v never answered: %v", ip, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// BenchmarkNodeUDP reports the UDP throughput between two nodes, each a
// udpload process (microlink, or tsnet: the engine tailscaled runs, in
// userspace-networking mode), and the peak RSS of either under that load.
func BenchmarkNodeUDP(b *testing.B) {
	window := 5 * time.Second
	if testing.Short() {
		window = time.Second
	}
	for _, impl := range []string{"microlink", "tailscaled"} {
		b.Run("impl="+impl, func(b *testing.B) {
			flagImpl := impl
			if impl == "tailscaled" {
				flagImpl = "tsnet"
			}
			l := quietLab(b)
			recv := startUDPLoad(b, l, flagImpl, "udp-recv", "-listen", "9000")
			ready := recv.next(b)
			ip, err := netip.ParseAddr(fmt.Sprint(ready["ready"]))
			if err != nil {
				b.Fatalf("receiver ready line %v: %v", ready, err)
			}
			send := startUDPLoad(b, l, flagImpl, "udp-send", "-send", netip.AddrPortFrom(ip, 9000).String(), "-duration", window.String())
			sendReady := send.next(b)
			sent := send.next(b)
			got := recv.next(b)
			b.ReportMetric(number(got["mb_per_s"]), "MB/s")
			b.ReportMetric(max(number(got["hwm_mb"]), number(sent["hwm_mb"])), "peak-rss-MB")
			// The same processes' RSS once joined, before any load.
			b.ReportMetric(max(number(ready["rss_mb"]), number(sendReady["rss_mb"])), "ready-rss-MB")
			b.ReportMetric(number(got["hwm_mb"]), "recv-hwm-MB")
			b.ReportMetric(number(sent["hwm_mb"]), "send-hwm-MB")
			if n := number(sent["sent"]); n > 0 {
				b.ReportMetric(100*(1-number(got["packets"])/n), "%lost")
			}
		})
	}
}

func number(v any) float64 {
	f, _ := v.(float64)
	return f
}

var (
	loadOnce sync.Once
	loadBins map[string]string // by -impl: microlink's built without tsnet
	loadErr  error
)

// udploadProc is a running udpload whose JSON lines are read one by one.
type udploadProc struct {
	cmd    *exec.Cmd
	lines  chan map[string]any
	stderr *lockedWriter
}

func startUDPLoad(b *testing.B, l *lab.Lab, impl, hostname string, args ...string) *udploadProc {
	b.Helper()
	loadOnce.Do(func() {
		dir, err := os.MkdirTemp("", "microlink-udpload")
		if err != nil {
			loadErr = err
			return
		}
		// microlink's process holds no tsnet code, so its RSS is its own.
		loadBins = map[string]string{"microlink": filepath.Join(dir, "udpload-microlink"), "tsnet": filepath.Join(dir, "udpload")}
		for impl, tags := range map[string]string{"microlink": "microlinkonly", "tsnet": ""} {
			out, err := exec.Command("go", "build", "-tags="+tags, "-o", loadBins[impl], "./udpload").CombinedOutput()
			if err != nil {
				loadErr = fmt.Errorf("go build -tags=%q ./bench/udpload: %v\n%s", tags, err, out)
				return
			}
		}
	})
	if loadErr != nil {
		b.Fatal(loadErr)
	}
	loadBin := loadBins[impl]
	p := &udploadProc{lines: make(chan map[string]any, 4), stderr: &lockedWriter{w: new(bytes.Buffer)}}
	p.cmd = exec.Command(loadBin, append([]string{"-impl", impl, "-control", l.ControlURL, "-authkey", l.AuthKey,
		"-hostname", hostname, "-dir", b.TempDir()}, args...)...)
	p.cmd.Env = append(os.Environ(), "TS_ASSUME_NETWORK_UP_FOR_TEST=1", "TS_DISABLE_PORTMAPPER=1", "TS_PANIC_IF_HIT_MAIN_CONTROL=1")
	p.cmd.Stderr = p.stderr
	stdin, err := p.cmd.StdinPipe() // closing it ends a receiver
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		dec := json.NewDecoder(stdout)
		for {
			var m map[string]any
			if err := dec.Decode(&m); err != nil {
				close(p.lines)
				return
			}
			p.lines <- m
		}
	}()
	b.Cleanup(func() {
		stdin.Close()
		exited := make(chan struct{})
		go func() { p.cmd.Wait(); close(exited) }()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			p.cmd.Process.Kill()
			<-exited
		}
		<-done
		if b.Failed() {
			b.Logf("udpload %s stderr:\n%s", hostname, p.stderr.String())
		}
	})
	return p
}

// next returns the next JSON line of the process.
func (p *udploadProc) next(b *testing.B) map[string]any {
	b.Helper()
	select {
	case m, ok := <-p.lines:
		if !ok {
			b.Fatalf("udpload ended early:\n%s", p.stderr.String())
		}
		return m
	case <-time.After(90 * time.Second):
		b.Fatalf("udpload said nothing for 90 s:\n%s", p.stderr.String())
	}
	return nil
}
