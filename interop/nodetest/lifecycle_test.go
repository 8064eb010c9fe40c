package nodetest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/microlink-go/microlink"
	"github.com/microlink-go/microlink/interop/lab"
	"tailscale.com/ipn/ipnstate"
)

// TestCloseStopsGoroutines: closing a node that has run the whole protocol
// (control, DERP, disco, WireGuard, sockets) stops every goroutine it
// started.
func TestCloseStopsGoroutines(t *testing.T) {
	l := lab.Start(t, lab.Options{})
	ts := l.StartTailscaled(t, lab.TSOptions{Hostname: "real-peer", NeverDirect: true})
	if g := lab.MicrolinkGoroutines(); len(g) != 0 {
		t.Fatalf("goroutines before start:\n%s", strings.Join(g, "\n\n"))
	}
	n := startNode(t, l, "ml-leak", "")
	c, err := n.ListenUDP(5000)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	waitFor(t, 5*time.Second, "peer", func() bool { _, ok := findPeer(n, "real-peer"); return ok })
	if _, err := n.Ping(ctx, ts.IPv4().String(), microlink.PingTSMP); err != nil {
		t.Fatalf("ping before close: %v", err)
	}
	if len(lab.MicrolinkGoroutines()) == 0 {
		t.Fatal("a running node shows no goroutines: the check cannot see them")
	}
	n.Close()
	if _, _, err := c.ReadFrom(make([]byte, 10)); err == nil {
		t.Fatal("socket still open after Close")
	}
	lab.WaitNoMicrolinkGoroutines(t, 5*time.Second)
	if n.State() != microlink.Stopped {
		t.Fatalf("state after Close = %v", n.State())
	}
}

// TestCLI runs the microlink binary as a person would: "up" in the
// foreground, then "status" and "ping" against it, then SIGTERM.
func TestCLI(t *testing.T) {
	l := lab.Start(t, lab.Options{})
	ts := l.StartTailscaled(t, lab.TSOptions{Hostname: "real-peer", NeverDirect: true})
	bin := filepath.Join(t.TempDir(), "microlink")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/microlink-go/microlink/cmd/microlink").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	dir := t.TempDir()
	up := exec.Command(bin, "up", "--authkey", l.AuthKey, "--hostname", "ml-cli", "--login-server", l.ControlURL, "--statedir", dir, "--port", "0")
	var logs bytes.Buffer
	up.Stderr = &logs
	if err := up.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if up.ProcessState == nil {
			up.Process.Kill()
			up.Wait()
		}
		if t.Failed() {
			t.Logf("microlink up log:\n%s", logs.String())
		}
	}()
	cli := func(args ...string) (string, error) {
		out, err := exec.Command(bin, append(args, "--statedir", dir)...).CombinedOutput()
		return string(out), err
	}
	var st struct {
		BackendState string
		Self         struct{ TailscaleIPs []string }
		Peer         map[string]struct {
			HostName     string
			TailscaleIPs []string
		}
	}
	waitFor(t, 15*time.Second, "microlink up to be Running with its peer", func() bool {
		out, err := cli("status", "--json")
		if err != nil || json.Unmarshal([]byte(out), &st) != nil {
			return false
		}
		return st.BackendState == "Running" && len(st.Peer) == 1
	})
	for _, p := range st.Peer {
		if p.HostName != "real-peer" || len(st.Self.TailscaleIPs) == 0 {
			t.Fatalf("status = %+v", st)
		}
	}
	if fi, err := os.Stat(filepath.Join(dir, "microlink.sock")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket: %v %v", fi, err)
	}
	out, err := cli("status")
	if err != nil || !strings.Contains(out, "real-peer") || !strings.Contains(out, st.Self.TailscaleIPs[0]) {
		t.Fatalf("status: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := ts.WaitStatus(ctx, func(s *ipnstate.Status) bool {
		p := lab.FindPeer(s, "ml-cli")
		return p != nil && p.Relay != ""
	}); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"ping", "-c", "2", "real-peer"}, {"ping", "--tsmp", "-c", "1", ts.IPv4().String()}, {"ping", "--icmp", "-c", "1", "real-peer"}} {
		out, err := cli(args...)
		if err != nil || !strings.Contains(out, "pong from real-peer") {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	// The TSMP and ICMP pings went through WireGuard, relayed: the real
	// peer never uses a direct path here.
	if out, err := cli("status"); err != nil || !strings.Contains(out, "WireGuard bytes: direct rx 0 ") || strings.Contains(out, "DERP rx 0 ") {
		t.Fatalf("status after pings: %v\n%s", err, out)
	}
	// The peer reaches the daemon too.
	if _, err := ts.Ping(ctx, netip.MustParseAddr(st.Self.TailscaleIPs[0]), "TSMP"); err != nil {
		t.Fatalf("real peer TSMP ping of the daemon: %v", err)
	}
	up.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- up.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("up exited with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("up did not stop on SIGTERM")
	}
	if _, err := os.Stat(filepath.Join(dir, "microlink.sock")); !os.IsNotExist(err) {
		t.Fatalf("socket left behind: %v", err)
	}
	sc := bufio.NewScanner(strings.NewReader(logs.String()))
	sawConnected := false
	for sc.Scan() {
		if strings.Contains(sc.Text(), "state=Connected") {
			sawConnected = true
		}
	}
	if !sawConnected {
		t.Fatalf("up did not log the Connected state:\n%s", logs.String())
	}
}
