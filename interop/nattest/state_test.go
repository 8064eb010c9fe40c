package nattest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/microlink-go/microlink/internal/key"
	"github.com/microlink-go/microlink/internal/state"
	"github.com/microlink-go/microlink/interop/lab"
	"tailscale.com/ipn/ipnstate"
)

// upOnce runs "microlink up" in namespace ns and returns its output and
// exit error; it is for starts that must fail, so it gives up after 30 s.
func upOnce(t *testing.T, ns, controlURL, authKey, dir string, extra ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := append([]string{"netns", "exec", ns, microlinkCLI(t), "up", "--authkey", authKey, "--hostname", mlName,
		"--login-server", controlURL, "--statedir", dir, "--port", "0"}, extra...)
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("microlink up did not stop within 30 s:\n%s", out)
	}
	return string(out), err
}

func stateDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "mlst-") // short: the socket path must fit in 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// TestLoginServerSwitch: a state directory registered with one control
// server is refused by "up --login-server" of another, with a message
// naming both and nothing changed; with --fresh-identity the node joins
// the other tailnet under a new identity, without the old tailnet's
// peers, and reaches that tailnet's tailscaled. Going back needs
// --fresh-identity again.
func TestLoginServerSwitch(t *testing.T) {
	needNetwork(t)
	mlHost := newPublicHost(t, "ml")
	tsHostA, tsHostB := newPublicHost(t, "tsa"), newPublicHost(t, "tsb")
	labA, labB := startLab(t), startLab(t)
	labA.StartTailscaled(t, lab.TSOptions{Hostname: "ts-a", TUN: true, Netns: tsHostA.NS})
	tsB := labB.StartTailscaled(t, lab.TSOptions{Hostname: "ts-b", TUN: true, Netns: tsHostB.NS})
	dir := stateDir(t)

	d := launchDaemon(t, labA.ControlURL, labA.AuthKey, mlHost.NS, mlName, dir)
	d.waitConnected(t)
	waitFor(t, 20*time.Second, "microlink to see ts-a", func() bool {
		out, err := d.cli("status")
		return err == nil && statusLine(out, "ts-a") != ""
	})
	before, err := d.status()
	if err != nil {
		t.Fatal(err)
	}
	d.stop() // saves the peer cache, with ts-a in it
	idBefore, _ := os.ReadFile(filepath.Join(dir, state.IdentityFile))
	peersBefore, _ := os.ReadFile(filepath.Join(dir, state.PeersFile))
	if !bytes.Contains(peersBefore, []byte(`"Name":"ts-a"`)) {
		t.Fatalf("the peer cache does not hold ts-a:\n%s", peersBefore)
	}

	out, err := upOnce(t, mlHost.NS, labB.ControlURL, labB.AuthKey, dir)
	t.Logf("up with another --login-server:\n%s", out)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("up with another --login-server: %v", err)
	}
	for _, want := range []string{labA.ControlURL, labB.ControlURL, "--fresh-identity"} {
		if !strings.Contains(out, want) {
			t.Errorf("the message does not mention %s", want)
		}
	}
	if now, _ := os.ReadFile(filepath.Join(dir, state.IdentityFile)); !bytes.Equal(now, idBefore) {
		t.Fatal("the identity changed")
	}
	if now, _ := os.ReadFile(filepath.Join(dir, state.PeersFile)); !bytes.Equal(now, peersBefore) {
		t.Fatal("the peer cache changed")
	}
	if n := len(labB.Control.AllNodes()); n != 1 {
		t.Fatalf("the other control server has %d nodes, want only its tailscaled", n)
	}

	d = launchDaemon(t, labB.ControlURL, labB.AuthKey, mlHost.NS, mlName, dir, "--fresh-identity")
	d.waitConnected(t)
	after, err := d.status()
	if err != nil {
		t.Fatal(err)
	}
	if after.Self.NodeKey == before.Self.NodeKey {
		t.Fatal("--fresh-identity kept the node key")
	}
	for _, p := range after.Peers {
		if p.Name == "ts-a" {
			t.Fatal("the old tailnet's peer is still known")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	mlIP := netip.MustParseAddr(after.Self.Addresses[0])
	if _, err := tsB.WaitStatus(ctx, func(st *ipnstate.Status) bool { return lab.FindPeer(st, mlName) != nil }); err != nil {
		t.Fatalf("ts-b never saw microlink: %v", err)
	}
	if _, err := tsB.PingRetry(ctx, mlIP, "TSMP", 10); err != nil {
		t.Fatalf("ts-b cannot ping microlink in the new tailnet: %v", err)
	}
	if out, err := d.cli("ping", "--tsmp", "-c", "1", "ts-b"); err != nil || !strings.Contains(out, "pong from ts-b") {
		t.Fatalf("microlink cannot ping ts-b: %v\n%s", err, out)
	}
	d.stop()
	if now, _ := os.ReadFile(filepath.Join(dir, state.PeersFile)); bytes.Contains(now, []byte(`"Name":"ts-a"`)) || !bytes.Contains(now, []byte(`"Name":"ts-b"`)) {
		t.Fatalf("the peer cache should hold ts-b, not the old tailnet's ts-a:\n%s", now)
	}

	// The identity now belongs to the second server: the first refuses.
	out, err = upOnce(t, mlHost.NS, labA.ControlURL, labA.AuthKey, dir)
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(out, labB.ControlURL) {
		t.Fatalf("back to the first server without --fresh-identity: %v\n%s", err, out)
	}
}

// TestDaemonKilledWhileWritingState kills "microlink up" with SIGKILL at
// random moments, 100 times: during its start (identity loaded, netmap
// being applied) and during its shutdown, while it saves the peer cache.
// Every time the identity loads with the same keys and, once written, the
// peer cache loads; at the end the daemon starts as the same node, with
// its peers restored, and a real tailscaled reaches it.
func TestDaemonKilledWhileWritingState(t *testing.T) {
	needNetwork(t)
	mlHost, tsHost := newPublicHost(t, "ml"), newPublicHost(t, "ts")
	l := startLab(t)
	ts := l.StartTailscaled(t, lab.TSOptions{Hostname: tsName, TUN: true, Netns: tsHost.NS})
	dir := stateDir(t)
	bin := microlinkCLI(t)
	start := func() *exec.Cmd {
		cmd := exec.Command("ip", "netns", "exec", mlHost.NS, bin, "up", "--authkey", l.AuthKey, "--hostname", mlName,
			"--login-server", l.ControlURL, "--statedir", dir, "--port", "0")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	socket := filepath.Join(dir, "microlink.sock")

	var ident *state.Identity
	midWrite, shutdowns := 0, 0
	const iterations = 100
	for i := range iterations {
		cmd := start()
		if i%2 == 0 {
			// Somewhere in the start.
			time.Sleep(time.Duration(rand.IntN(1000)) * time.Millisecond)
		} else {
			// Connected, then killed while shutting down: SIGTERM makes
			// it save the peer cache, SIGKILL follows within 30 ms.
			deadline := time.Now().Add(20 * time.Second)
			for !connected(bin, dir) {
				if time.Now().After(deadline) {
					cmd.Process.Kill()
					cmd.Wait()
					t.Fatalf("iteration %d: the daemon did not connect within 20 s", i)
				}
				time.Sleep(20 * time.Millisecond)
			}
			cmd.Process.Signal(syscall.SIGTERM)
			time.Sleep(time.Duration(rand.IntN(30_000)) * time.Microsecond)
			shutdowns++
		}
		cmd.Process.Kill()
		cmd.Wait()
		os.Remove(socket) // left by the killed daemon

		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if strings.Contains(e.Name(), ".tmp-") {
				midWrite++
				break
			}
		}
		s, err := state.Open(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		id, err := s.LoadIdentity()
		if errors.Is(err, os.ErrNotExist) && ident == nil {
			continue // killed before the first identity was written
		}
		if err != nil {
			t.Fatalf("iteration %d: the identity does not load: %v", i, err)
		}
		if ident == nil {
			ident = id
		} else if !id.MachineKey.Equal(ident.MachineKey) || !id.NodeKey.Equal(ident.NodeKey) {
			t.Fatalf("iteration %d: the identity changed", i)
		}
		if _, err := os.Stat(filepath.Join(dir, state.PeersFile)); err == nil {
			if c := s.LoadPeers(); c == nil || len(c.Peers) == 0 {
				t.Fatalf("iteration %d: the peer cache does not load", i)
			}
		}
	}
	t.Logf("%d kills, %d of them during a shutdown; %d left a temporary file (a write cut short)", iterations, shutdowns, midWrite)
	if ident == nil {
		t.Fatal("no identity was ever written")
	}

	d := launchDaemon(t, l.ControlURL, l.AuthKey, mlHost.NS, mlName, dir)
	d.waitConnected(t)
	st, err := d.status()
	if err != nil {
		t.Fatal(err)
	}
	var nk key.NodePublic
	if err := nk.UnmarshalText([]byte(st.Self.NodeKey)); err != nil || nk != ident.NodeKey.NodePublic() {
		t.Fatalf("the daemon runs as %s, not as the saved identity", st.Self.NodeKey)
	}
	if !strings.Contains(d.logs.String(), "restored known peers") {
		t.Fatalf("the peer cache was not restored:\n%s", d.logs.String())
	}
	if n := len(l.Control.AllNodes()); n != 2 {
		t.Fatalf("control has %d nodes, want microlink and tailscaled only", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := ts.PingRetry(ctx, netip.MustParseAddr(st.Self.Addresses[0]), "TSMP", 10); err != nil {
		t.Fatalf("tailscaled cannot reach microlink after the kills: %v", err)
	}
}

// connected reports whether the daemon with state in dir answers status
// with Connected.
func connected(bin, dir string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "status", "--json", "--statedir", dir).Output()
	var st cliStatus
	return err == nil && json.Unmarshal(out, &st) == nil && st.State == "Running"
}

// mountTmpfs mounts a tmpfs of the given size on dir for the test. The
// test binary runs in a mount namespace of its own (made by "ip netns
// exec"), so the mount is not seen outside it.
func mountTmpfs(t *testing.T, dir, size string) {
	t.Helper()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size+",mode=0700"); err != nil {
		t.Fatalf("mounting a tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
}

// fillDisk writes to path until the file system is full.
func fillDisk(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, n := range []int{4096, 1} {
		buf := make([]byte, n)
		for {
			if _, err := f.Write(buf); err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					t.Fatal(err)
				}
				break
			}
		}
	}
}

// TestDaemonFullDisk runs "microlink up" with its state on a small tmpfs
// that then fills up. When a new peer joins, the node's save of the peer
// cache fails: the error is logged, the saved cache stays as it was, and
// the node keeps running, reaching both the old and the new peer. Once
// there is room again, the next save works. A first start on a full disk
// fails with a clear error.
func TestDaemonFullDisk(t *testing.T) {
	needNetwork(t)
	mlHost := newPublicHost(t, "ml")
	tsHostA, tsHostB := newPublicHost(t, "tsa"), newPublicHost(t, "tsb")
	l := startLab(t)
	tsA := l.StartTailscaled(t, lab.TSOptions{Hostname: "ts-a", TUN: true, Netns: tsHostA.NS})
	dir := stateDir(t)
	mountTmpfs(t, dir, "256k")

	// A first run leaves an identity and a peer cache with ts-a.
	d := launchDaemon(t, l.ControlURL, l.AuthKey, mlHost.NS, mlName, dir)
	d.waitConnected(t)
	d.stop()
	peersBefore, err := os.ReadFile(filepath.Join(dir, state.PeersFile))
	if err != nil || !bytes.Contains(peersBefore, []byte(`"Name":"ts-a"`)) {
		t.Fatalf("peer cache after the first run: %v\n%s", err, peersBefore)
	}
	idBefore, _ := os.ReadFile(filepath.Join(dir, state.IdentityFile))

	d = launchDaemon(t, l.ControlURL, l.AuthKey, mlHost.NS, mlName, dir)
	d.waitConnected(t)
	fillDisk(t, filepath.Join(dir, "filler"))
	// A new peer makes the node save its peer cache (after 30 s).
	tsB := l.StartTailscaled(t, lab.TSOptions{Hostname: "ts-b", TUN: true, Netns: tsHostB.NS})
	waitFor(t, 60*time.Second, "the failed save of the peer cache", func() bool {
		return strings.Contains(d.logs.String(), "saving the peer cache")
	})
	logged := d.logs.String()
	logged = logged[strings.Index(logged, "saving the peer cache"):]
	logged, _, _ = strings.Cut(logged, "\n")
	t.Logf("the node logged: %s", logged)
	if !strings.Contains(logged, "no space left on device") || !strings.Contains(logged, state.PeersFile) {
		t.Fatalf("the error does not say what failed: %s", logged)
	}
	if now, _ := os.ReadFile(filepath.Join(dir, state.PeersFile)); !bytes.Equal(now, peersBefore) {
		t.Fatal("the peer cache changed")
	}
	if now, _ := os.ReadFile(filepath.Join(dir, state.IdentityFile)); !bytes.Equal(now, idBefore) {
		t.Fatal("the identity changed")
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Fatalf("temporary file %s left by the failed save", e.Name())
		}
	}

	// The node runs on: both peers reach it, and it reaches both.
	st, err := d.status()
	if err != nil || st.State != "Running" {
		t.Fatalf("status after the failed save: %v %+v", err, st)
	}
	mlIP := netip.MustParseAddr(st.Self.Addresses[0])
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, ts := range []*lab.Tailscaled{tsA, tsB} {
		if _, err := ts.PingRetry(ctx, mlIP, "TSMP", 10); err != nil {
			t.Fatalf("%s cannot reach microlink on a full disk: %v", ts.Hostname, err)
		}
		if out, err := d.cli("ping", "--tsmp", "-c", "1", ts.Hostname); err != nil || !strings.Contains(out, "pong from "+ts.Hostname) {
			t.Fatalf("microlink cannot reach %s on a full disk: %v\n%s", ts.Hostname, err, out)
		}
	}

	// Room again: the save at shutdown works and holds the new peer.
	if err := os.Remove(filepath.Join(dir, "filler")); err != nil {
		t.Fatal(err)
	}
	d.stop()
	if now, _ := os.ReadFile(filepath.Join(dir, state.PeersFile)); !bytes.Contains(now, []byte(`"Name":"ts-b"`)) {
		t.Fatalf("the peer cache saved after space was freed lacks ts-b:\n%s", now)
	}

	// A first start on a full disk cannot make an identity: it says so.
	fresh := stateDir(t)
	mountTmpfs(t, fresh, "64k")
	fillDisk(t, filepath.Join(fresh, "filler"))
	out, err := upOnce(t, mlHost.NS, l.ControlURL, l.AuthKey, fresh)
	if err == nil || !strings.Contains(out, "no space left on device") || !strings.Contains(out, state.IdentityFile) {
		t.Fatalf("first start on a full disk: %v\n%s", err, out)
	}
	t.Logf("first start on a full disk: %s", strings.TrimSpace(out))
}
