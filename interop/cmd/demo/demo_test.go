package main

import (
	"bytes"
	"context"
	"os"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microlink-go/microlink/interop/lab"
)

func TestMain(m *testing.M) { os.Exit(lab.RunInNetns(m)) }

// TestDemo runs the demo as "go run ./cmd/demo" would, with a TUN device
// for the real peer when the test runs as root.
func TestDemo(t *testing.T) {
	out := runDemo(t, options{})
	want := []string{
		"[1] Start the lab",
		"pong from microlink-demo", // tailscale ping
		"via TSMP", "via ICMP",     // --tsmp, --icmp
		"disco  pong from real-peer",                        // Node.Ping
		"TSMP   pong from real-peer",                        //
		"ICMP   pong from real-peer",                        //
		`microlink got "hello microlink, from`,              // UDP in
		`got "hello ` + peerOrTSNet() + `, from microlink"`, // UDP out
		"All steps passed.",
	}
	if lab.TUNAvailable() == nil {
		want = append(want, "3 received, 0% packet loss")
	}
	checkOutput(t, out, want)
	if !regexp.MustCompile(`(?m)^ +real-peer +[0-9a-f.:, ]+ +yes +`).MatchString(out) {
		t.Error("the peer list does not show real-peer online")
	}
	// The pings through WireGuard came back over the direct path.
	if !regexp.MustCompile(`direct in/out [1-9][0-9]*/[1-9][0-9]*, relayed in/out [0-9]+/[0-9]+; netmap messages [1-9]`).MatchString(out) {
		t.Error("the counters do not show direct traffic and netmaps")
	}
}

// TestDemoDERPOnlyUserspace runs the demo with a userspace real peer that
// never uses direct UDP: pings with it go through DERP, and the UDP step
// uses a tsnet peer.
func TestDemoDERPOnlyUserspace(t *testing.T) {
	out := runDemo(t, options{DERPOnly: true, Userspace: true})
	checkOutput(t, out, []string{
		"userspace networking (--userspace)",
		"pong from microlink-demo (100.", "via DERP(lab)",
		"disco  pong from real-peer", "via DERP region 900",
		"skipped: the real peer has no TUN device",
		`microlink got "hello microlink, from tsnet-peer"`,
		`got "hello tsnet-peer, from microlink"`,
		"All steps passed.",
	})
	// The real peer's pings through WireGuard were relayed.
	if !regexp.MustCompile(`relayed in/out [1-9][0-9]*/[1-9][0-9]*;`).MatchString(out) {
		t.Error("the counters do not show relayed traffic")
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
	if strings.Contains(out.String(), "What microlink sees") {
		t.Error("steps after the failed start were run")
	}
	if !strings.Contains(logs.String(), "last lab logs") {
		t.Error("no lab logs after a failure")
	}
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
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
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
	return out.String()
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
