package state

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
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
	"github.com/microlink-go/microlink/internal/netmap"
	"github.com/microlink-go/microlink/internal/tailcfg"
)

// The test binary run with envWriter set to a directory becomes a writer
// process that saves state there as fast as it can until it is killed;
// with envFullDisk set it runs TestFullDisk's checks in a mount namespace
// of its own.
const (
	envWriter   = "MICROLINK_STATE_TEST_WRITER"
	envFullDisk = "MICROLINK_STATE_TEST_FULLDISK"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(envWriter); dir != "" {
		os.Exit(writeForever(dir))
	}
	os.Exit(m.Run())
}

// writeForever saves the identity (with a new node key, as a rotation
// does) and a peer cache of changing size in turn, and prints "ready"
// after the first of each.
func writeForever(dir string) int {
	s, err := Open(dir, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	id, _, err := s.IdentityFor(testControl, false)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	all := manyPeers(200)
	for i := 0; ; i++ {
		id.OldNodeKey, id.NodeKey = id.NodeKey, key.NewPrivate()
		if err := s.SaveIdentity(id); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if err := s.SavePeers(NewPeerCache(all[:1+i%len(all)], nil, time.Now())); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if i == 0 {
			fmt.Println("ready")
		}
	}
}

// manyPeers returns n netmap peers, each with an address and an endpoint.
func manyPeers(n int) []netmap.Peer {
	m := netmap.New(netmap.Options{})
	resp := &tailcfg.MapResponse{Node: &tailcfg.Node{ID: 1, Key: key.NewPrivate().NodePublic()}}
	for i := range n {
		a := netip.AddrFrom4([4]byte{100, 64, byte(i >> 8), byte(i)})
		resp.Peers = append(resp.Peers, &tailcfg.Node{
			ID: tailcfg.NodeID(i + 2), Name: fmt.Sprintf("peer%d.ts.net.", i), Key: key.NewPrivate().NodePublic(),
			Addresses: []netip.Prefix{netip.PrefixFrom(a, 32)},
			Endpoints: []netip.AddrPort{netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}), 41641)},
		})
	}
	applyResponse(m, resp)
	return m.Peers()
}

// needReexec skips a test that runs the test binary again where that
// cannot be done: under qemu's user-mode emulation (the cross-architecture
// runs) the kernel cannot execute the binary by itself.
func needReexec(t *testing.T) {
	t.Helper()
	err := exec.Command(os.Args[0], "-test.list=^$").Run()
	if errors.Is(err, syscall.ENOEXEC) {
		t.Skipf("cannot run the test binary again here: %v", err)
	}
}

// TestKilledWhileWriting kills a process that writes state without pause
// with SIGKILL at a random moment, 100 times: every time, the identity
// loads with the same machine key and the peer cache loads.
func TestKilledWhileWriting(t *testing.T) {
	needReexec(t)
	const iterations = 100
	dir := filepath.Join(t.TempDir(), "state")
	var machine key.Private
	midWrite := 0
	for i := range iterations {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), envWriter+"="+dir)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil || line != "ready\n" {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("iteration %d: writer did not start: %q %v\n%s", i, line, err, stderr.String())
		}
		time.Sleep(time.Duration(rand.IntN(20_000)) * time.Microsecond)
		cmd.Process.Kill()
		err = cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("iteration %d: writer ended with %v, not by SIGKILL\n%s", i, err, stderr.String())
		}

		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if strings.Contains(e.Name(), ".tmp-") {
				midWrite++
				break
			}
		}
		s, err := Open(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		id, err := s.LoadIdentity()
		if err != nil {
			t.Fatalf("iteration %d: identity does not load after SIGKILL: %v", i, err)
		}
		if i == 0 {
			machine = id.MachineKey
		} else if !id.MachineKey.Equal(machine) {
			t.Fatalf("iteration %d: machine key changed", i)
		}
		if c := s.LoadPeers(); c == nil || len(c.Peers) == 0 {
			t.Fatalf("iteration %d: peer cache does not load after SIGKILL", i)
		}
		ents, _ = os.ReadDir(dir)
		for _, e := range ents {
			if strings.Contains(e.Name(), ".tmp-") {
				t.Fatalf("iteration %d: temporary file %s left after Open", i, e.Name())
			}
		}
	}
	t.Logf("%d of %d kills interrupted a write (a temporary file was left)", midWrite, iterations)
	// Writes take nearly all of the writer's time: if no kill ever caught
	// one, the test did not test what it claims to.
	if midWrite < iterations/10 {
		t.Fatalf("only %d of %d kills interrupted a write", midWrite, iterations)
	}
}

// TestFullDisk saves state on a tmpfs of a few pages that is then filled
// up: the saves fail with an error that says so, nothing is left behind,
// and the state saved before loads as it was. It runs the checks in a
// re-executed test binary inside a mount namespace of its own, where it
// may mount the tmpfs.
func TestFullDisk(t *testing.T) {
	if os.Getenv(envFullDisk) != "" {
		fullDiskChecks(t)
		return
	}
	needReexec(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("needs unshare(1) for a mount namespace")
	}
	cmd := exec.Command(unshare, "--mount", "--propagation", "private", os.Args[0], "-test.run=^TestFullDisk$", "-test.v")
	cmd.Env = append(os.Environ(), envFullDisk+"="+t.TempDir())
	out, err := cmd.CombinedOutput()
	t.Logf("in a mount namespace:\n%s", out)
	if err != nil || !bytes.Contains(out, []byte("--- PASS: TestFullDisk")) {
		t.Fatalf("full-disk checks failed: %v", err)
	}
}

func fullDiskChecks(t *testing.T) {
	mnt := os.Getenv(envFullDisk)
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=64k,mode=0700"); err != nil {
		t.Fatalf("mounting a tmpfs: %v", err)
	}
	defer syscall.Unmount(mnt, 0)
	s, err := Open(filepath.Join(mnt, "state"), nil)
	if err != nil {
		t.Fatal(err)
	}
	id, _, err := s.IdentityFor(testControl, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SavePeers(NewPeerCache(manyPeers(3), nil, time.Now())); err != nil {
		t.Fatal(err)
	}
	idBefore, _ := os.ReadFile(filepath.Join(s.Dir(), IdentityFile))
	peersBefore, _ := os.ReadFile(filepath.Join(s.Dir(), PeersFile))
	fill(t, filepath.Join(mnt, "filler"))

	// A rotated node key and a bigger peer cache do not fit.
	rotated := *id
	rotated.OldNodeKey, rotated.NodeKey = id.NodeKey, key.NewPrivate()
	err = s.SaveIdentity(&rotated)
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), IdentityFile) {
		t.Fatalf("saving the identity on a full disk: %v", err)
	}
	t.Logf("identity: %v", err)
	err = s.SavePeers(NewPeerCache(manyPeers(100), nil, time.Now()))
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), PeersFile) {
		t.Fatalf("saving the peer cache on a full disk: %v", err)
	}
	t.Logf("peer cache: %v", err)

	if now, _ := os.ReadFile(filepath.Join(s.Dir(), IdentityFile)); !bytes.Equal(now, idBefore) {
		t.Fatal("identity file changed by a failed save")
	}
	if now, _ := os.ReadFile(filepath.Join(s.Dir(), PeersFile)); !bytes.Equal(now, peersBefore) {
		t.Fatal("peer cache changed by a failed save")
	}
	ents, _ := os.ReadDir(s.Dir())
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Fatalf("temporary file %s left by a failed save", e.Name())
		}
	}
	s2, err := Open(s.Dir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s2.LoadIdentity(); err != nil || *got != *id {
		t.Fatalf("identity after the failed save: %+v %v", got, err)
	}
	if c := s2.LoadPeers(); c == nil || len(c.Peers) != 3 {
		t.Fatalf("peer cache after the failed save: %+v", c)
	}

	// An old identity file without a control URL still loads on a full
	// disk; recording the URL waits for the next start.
	legacy := fmt.Sprintf("{\"Version\":1,\"MachineKey\":%q,\"NodeKey\":%q}\n", id.MachineKey.String(), id.NodeKey.String())
	if err := os.WriteFile(filepath.Join(s.Dir(), IdentityFile), []byte(legacy), 0o600); err != nil {
		t.Fatal(err) // same size class as before: fits in the file's own pages
	}
	got, created, err := s2.IdentityFor(testControl, false)
	if err != nil || created || !got.MachineKey.Equal(id.MachineKey) || got.ControlURL != testControl {
		t.Fatalf("old identity on a full disk: %+v %v %v", got, created, err)
	}

	// Once there is room again, saves work.
	if err := os.Remove(filepath.Join(mnt, "filler")); err != nil {
		t.Fatal(err)
	}
	if err := s2.SaveIdentity(&rotated); err != nil {
		t.Fatalf("saving after space was freed: %v", err)
	}
	// A fresh state directory on a full disk cannot get an identity: a
	// clear error, not a node without one.
	fill(t, filepath.Join(mnt, "filler"))
	s3, err := Open(filepath.Join(mnt, "state2"), nil)
	if err == nil {
		_, _, err = s3.IdentityFor(testControl, false)
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("new identity on a full disk: %v", err)
	}
	if _, err := os.Stat(filepath.Join(mnt, "state2", IdentityFile)); !errors.Is(err, fs.ErrNotExist) && err != nil {
		t.Fatal(err)
	}
}

// fill writes to path until the file system is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1024)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	// Small writes may still fit in the filler's last page.
	for {
		if _, err := f.Write(buf[:1]); err != nil {
			return
		}
	}
}
