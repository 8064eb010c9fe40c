package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microlink-go/microlink/interop/lab"
)

func TestMain(m *testing.M) { os.Exit(lab.RunInNetns(m)) }

// TestDemo runs scripts/demo.sh as a new user would, in a clean
// environment: a minimal PATH holding go and the system's directories, and
// the Go and tailscale build caches under HOME, but no microlink,
// tailscale or tailscaled command. Run as root, it fails if any step is
// skipped.
func TestDemo(t *testing.T) {
	out := runScript(t)
	want := []string{
		"[1] Build the microlink command",
		"] Start the lab",
		"pong from microlink-demo", // tailscale ping
		"via TSMP", "via ICMP",     // --tsmp, --icmp
		"disco  pong from real-peer",                        // Node.Ping
		"TSMP   pong from real-peer",                        //
		"ICMP   pong from real-peer",                        //
		`microlink got "hello microlink, from`,              // UDP in
		`got "hello ` + peerOrTSNet() + `, from microlink"`, // UDP out
		"== The daemon: microlink up, as a router runs it ==",
		"$ microlink up --authkey ",
		"$ microlink status --statedir ",
		"$ microlink ping --statedir ",
		"pong from microlink-router (100.", // tailscale ping of the daemon
		"microlink up exited in",
		"\nSummary (",
	}
	if os.Geteuid() == 0 {
		want = append(want, "3 received, 0% packet loss", "in ml-", "All steps passed.",
			"router$ getent hosts real-peer", "router's resolv.conf restored by microlink up")
	}
	checkOutput(t, out, want)
	if !regexp.MustCompile(`(?m)^ +real-peer +[0-9a-f.:, ]+ +yes +`).MatchString(out) {
		t.Error("the peer list does not show real-peer online")
	}
	// The pings through WireGuard came back over the direct path.
	if !regexp.MustCompile(`direct in/out [1-9][0-9]*/[1-9][0-9]*, relayed in/out [0-9]+/[0-9]+; netmap messages [1-9]`).MatchString(out) {
		t.Error("the counters do not show direct traffic and netmaps")
	}
	// microlink ping answered by the real peer and the library node.
	for _, name := range []string{peerName, nodeName} {
		if !regexp.MustCompile(`(?m)^ +pong from ` + name + ` \(100\.[0-9.]+\)( via \S+)? in [0-9]+\.[0-9]{2}ms$`).MatchString(out) {
			t.Errorf("no answer from %s to microlink ping", name)
		}
	}
	// The daemon's status lists both other nodes.
	if !regexp.MustCompile(`(?m)^ +100\.[0-9.]+ +microlink-router +self`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^ +100\.[0-9.]+ +real-peer +`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^ +100\.[0-9.]+ +microlink-demo +`).MatchString(out) {
		t.Error("microlink status does not list the daemon, the real peer and the library node")
	}
	results := checkSummary(t, out)
	if os.Geteuid() != 0 {
		return
	}
	for _, r := range results {
		if r.status != statusPassed {
			t.Errorf("run as root, step [%d] %s %s", r.num, r.name, r.status)
		}
	}
}

// runScript runs scripts/demo.sh in a clean environment and returns its
// output; the test fails if the script does.
func runScript(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	// Commands the demo must never take from PATH: it builds microlink
	// and uses the tailscale binaries of tailscale.com's pinned version.
	decoys := t.TempDir()
	for _, name := range []string{"microlink", "tailscale", "tailscaled"} {
		script := "#!/bin/sh\necho \"a stale $0 in PATH was run\" >&2\nexit 99\n"
		if err := os.WriteFile(filepath.Join(decoys, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	home, err := os.UserHomeDir()
	if err != nil {
		t.Fatal(err)
	}
	env := []string{
		"PATH=" + decoys + ":" + filepath.Dir(goBin) + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=" + home,
		"LANG=C.UTF-8",
	}
	// Where Go and the lab keep their caches and modules, if set.
	for _, k := range []string{"GOPATH", "GOCACHE", "GOMODCACHE", "GOPROXY", "GOSUMDB", "GONOSUMDB", "GOPRIVATE", "GOFLAGS", "GOTOOLCHAIN", "XDG_CACHE_HOME", lab.EnvCache, "TMPDIR"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "../../../scripts/demo.sh")
	cmd.Env = env
	var stdout, stderr lockedBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	t0 := time.Now()
	err = cmd.Run()
	t.Logf("scripts/demo.sh (%v):\n%s", time.Since(t0).Round(time.Millisecond), stdout.String())
	if stderr.Len() > 0 {
		t.Logf("its stderr:\n%s", stderr.String())
	}
	if err != nil {
		t.Fatalf("scripts/demo.sh: %v", err)
	}
	if strings.Contains(stderr.String(), "in PATH was run") {
		t.Fatal("the demo ran a command from PATH that it should have built")
	}
	return stdout.String()
}

// summaryLine is one step's line in the summary, as in
// "  [7]  skipped          The OS pings ... (reason)".
var summaryLine = regexp.MustCompile(`^ +\[(\d+)\] +(passed|FAILED|skipped|not run) +(?:[0-9.]+m?s +)?(.*)$`)

// checkSummary checks that the summary lists every step shown, in order,
// and returns its lines.
func checkSummary(t *testing.T, out string) []result {
	t.Helper()
	i := strings.LastIndex(out, "\nSummary (")
	if i < 0 {
		t.Fatal("no summary")
	}
	var results []result
	for _, line := range strings.Split(out[i+1:], "\n")[1:] {
		m := summaryLine.FindStringSubmatch(line)
		if m == nil {
			break
		}
		num, _ := strconv.Atoi(m[1])
		results = append(results, result{num: num, status: m[2], name: m[3]})
	}
	if len(results) == 0 {
		t.Fatal("the summary lists no steps")
	}
	shown := map[int]string{} // the steps' headings in the run
	for _, m := range regexp.MustCompile(`(?m)^\[(\d+)\] (.*)$`).FindAllStringSubmatch(out[:i], -1) {
		num, _ := strconv.Atoi(m[1])
		shown[num] = m[2]
	}
	for j, r := range results {
		if r.num != j+1 {
			t.Errorf("summary line %d is step [%d]", j+1, r.num)
		}
		name, ok := shown[r.num]
		switch {
		case !ok && r.status != statusNotRun:
			t.Errorf("summary lists step [%d] %s, which the run does not show", r.num, r.status)
		case ok && !strings.HasPrefix(r.name, name):
			t.Errorf("summary names step [%d] %q, the run %q", r.num, r.name, name)
		}
		delete(shown, r.num)
	}
	for num, name := range shown {
		t.Errorf("step [%d] %s is missing from the summary", num, name)
	}
	return results
}

// TestDemoDERPOnlyUserspace runs the demo with a userspace real peer that
// never uses direct UDP: pings with it go through DERP, and the UDP step
// uses a tsnet peer.
func TestDemoDERPOnlyUserspace(t *testing.T) {
	out := runDemo(t, options{DERPOnly: true, Userspace: true})
	skip := "the real peer uses userspace networking, as --userspace asks"
	checkOutput(t, out, []string{
		"userspace networking: " + skip,
		"pong from microlink-demo (100.", "via DERP(lab)",
		"disco  pong from real-peer", "via DERP region 900",
		"skipped: " + skip,
		`microlink got "hello microlink, from tsnet-peer"`,
		`got "hello tsnet-peer, from microlink"`,
		"via DERP(900)", // microlink ping
		"All steps that ran passed; 1 step was skipped.",
	})
	// The real peer's pings through WireGuard were relayed.
	if !regexp.MustCompile(`relayed in/out [1-9][0-9]*/[1-9][0-9]*;`).MatchString(out) {
		t.Error("the counters do not show relayed traffic")
	}
	// The skipped step is announced once, before the first step, and
	// listed with its reason in the summary.
	first := strings.Index(out, "\n[1] ")
	announce := regexp.MustCompile(`(?m)^  \[(\d+)\] The OS pings microlink through the real peer's TUN device: ` + regexp.QuoteMeta(skip) + `$`)
	if m := announce.FindAllStringIndex(out, -1); len(m) != 1 || m[0][0] > first {
		t.Errorf("the skipped step is announced %d times, or not before the first step", len(m))
	}
	skipped := 0
	for _, r := range checkSummary(t, out) {
		if r.status == statusSkipped {
			skipped++
			if !strings.HasSuffix(r.name, "("+skip+")") {
				t.Errorf("summary gives no reason for skipping [%d]: %s", r.num, r.name)
			}
		} else if r.status != statusPassed {
			t.Errorf("step [%d] %s %s", r.num, r.name, r.status)
		}
	}
	if skipped != 1 {
		t.Errorf("%d steps skipped, want 1", skipped)
	}
}

// TestDemoReportsFailure checks that a failing step fails the run, names
// the step, and that later steps needing it are not attempted.
func TestDemoReportsFailure(t *testing.T) {
	var out bytes.Buffer
	var logs lockedBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := run(ctx, options{Userspace: true, Log: &logs, authKey: "tskey-auth-wrong"}, &out)
	t.Logf("demo output:\n%s", out.String())
	if err == nil {
		t.Fatal("run succeeded with a wrong auth key")
	}
	if !strings.Contains(err.Error(), "Start the microlink node") {
		t.Errorf("error %q does not name the failed step", err)
	}
	checkOutput(t, out.String(), []string{"FAILED: Node.Start", "FAILED:\n  - Start the microlink node", "Shut down"})
	if n := strings.Count(out.String(), "\n  - "); n != 1 {
		t.Errorf("%d failures listed, want 1", n)
	}
	if strings.Contains(out.String(), "] What microlink sees") {
		t.Error("steps after the failed start were run")
	}
	results := checkSummary(t, out.String())
	failed := 0 // the number of the step that failed
	for _, r := range results {
		if strings.HasPrefix(r.name, "Start the microlink node") {
			failed = r.num
		}
	}
	for _, r := range results {
		want := statusPassed
		switch {
		case r.num == failed:
			want = statusFailed
		case r.num > failed && r.num < len(results): // all but "Shut down"
			want = statusNotRun
		}
		if r.status != want {
			t.Errorf("summary: step [%d] %s %s, want %s", r.num, r.name, r.status, want)
		}
	}
	if !strings.Contains(logs.String(), "last lab logs") {
		t.Error("no lab logs after a failure")
	}
	checkNoRouter(t)
}

func peerOrTSNet() string {
	if lab.TUNAvailable() == nil {
		return peerName
	}
	return tsnetName
}

// runDemo runs the demo, fails the test if it fails, and checks that it
// leaves no goroutines behind.
func runDemo(t *testing.T, opts options) string {
	t.Helper()
	before := runtime.NumGoroutine()
	var logs lockedBuffer
	opts.Log = &logs
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	t0 := time.Now()
	err := run(ctx, opts, &out)
	t.Logf("demo output (%v):\n%s", time.Since(t0).Round(time.Millisecond), out.String())
	if logs.Len() > 0 {
		t.Logf("demo logs:\n%s", logs.String())
	}
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	waitGoroutines(t, before)
	checkNoRouter(t)
	return out.String()
}

// checkNoRouter checks that the daemon's namespace and its link are gone.
func checkNoRouter(t *testing.T) {
	t.Helper()
	if !lab.InNetns() {
		return
	}
	if out, _ := exec.Command("ip", "netns", "list").CombinedOutput(); strings.Contains(string(out), "-router") {
		t.Errorf("the daemon's namespace is left after the demo:\n%s", out)
	}
	if exec.Command("ip", "link", "show", "router").Run() == nil {
		t.Error("the link to the daemon's namespace is left after the demo")
	}
}

func checkOutput(t *testing.T, out string, want []string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q", w)
		}
	}
}

// waitGoroutines waits until no more goroutines run than before the demo,
// and fails the test if that takes too long.
func waitGoroutines(t *testing.T, before int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("%d goroutines before the demo, %d after:\n%s", before, runtime.NumGoroutine(), buf)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("goroutines: %d before the demo, %d after", before, runtime.NumGoroutine())
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Len()
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestUpFlags reads the flags from help in the form the flag package
// prints, which "microlink up --help" uses.
func TestUpFlags(t *testing.T) {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	fs.String("socks5-server", "", "serve a SOCKS5 proxy\non ADDR")
	fs.Bool("verbose", false, "log debug messages")
	fs.Int("port", 0, "UDP port")
	var b strings.Builder
	fs.SetOutput(&b)
	fs.PrintDefaults()
	got := upFlags("usage: microlink up --authkey KEY\n\n" + b.String())
	want := map[string]bool{"socks5-server": true, "verbose": true, "port": true}
	if !maps.Equal(got, want) {
		t.Errorf("upFlags = %v, want %v, from:\n%s", got, want, b.String())
	}
}

// TestStaleRouterRemoved checks that the router namespace of a demo that
// was killed is deleted by the next one, and only that one.
func TestStaleRouterRemoved(t *testing.T) {
	if !lab.InNetns() {
		t.Skip("needs root and a private network namespace")
	}
	dead := 0 // a pid no process has
	for pid := 4000000; pid < 4001000; pid++ {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); os.IsNotExist(err) {
			dead = pid
			break
		}
	}
	stale, live := fmt.Sprintf("ml-%d-router", dead), fmt.Sprintf("ml-%d-router", os.Getppid())
	for _, name := range []string{stale, live} {
		if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add %s: %v: %s", name, err, out)
		}
		t.Cleanup(func() { exec.Command("ip", "netns", "delete", name).Run() })
	}
	r := lab.NewRunner("router", t.Logf)
	if err := r.Do(func() { newRouterNetns(r) }); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if fileExists("/run/netns/" + stale) {
		t.Errorf("%s of a process that is gone is still there", stale)
	}
	if !fileExists("/run/netns/" + live) {
		t.Errorf("%s of a running process was deleted", live)
	}
}
