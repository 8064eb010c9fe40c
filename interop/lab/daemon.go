package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

var cliBuild struct {
	once      sync.Once
	dir, path string
	err       error
}

// MicrolinkCLI builds the microlink command once per process, into a
// directory every user may read, and returns its path. The directory is
// removed when the process ends through RemoveMicrolinkCLI.
func MicrolinkCLI(t T) string {
	t.Helper()
	cliBuild.once.Do(func() {
		cliBuild.dir, cliBuild.err = os.MkdirTemp("", "mlcli-bin-")
		if cliBuild.err != nil {
			return
		}
		os.Chmod(cliBuild.dir, 0o755)
		cliBuild.path = filepath.Join(cliBuild.dir, "microlink")
		out, err := exec.Command("go", "build", "-buildvcs=false", "-o", cliBuild.path,
			"github.com/microlink-go/microlink/cmd/microlink").CombinedOutput()
		if err != nil {
			cliBuild.err = fmt.Errorf("go build microlink: %v\n%s", err, out)
		}
	})
	if cliBuild.err != nil {
		t.Fatalf("%v", cliBuild.err)
	}
	return cliBuild.path
}

// RemoveMicrolinkCLI deletes the command MicrolinkCLI built; call it from
// TestMain after the tests.
func RemoveMicrolinkCLI() {
	if cliBuild.dir != "" {
		os.RemoveAll(cliBuild.dir)
	}
}

// DaemonOptions say how StartDaemon runs "microlink up".
type DaemonOptions struct {
	Hostname, ControlURL, AuthKey string
	// Netns is the namespace it runs in; "" for the test's own.
	Netns string
	// Args are more flags for "up", such as "--tun".
	Args []string
	// UID, if not zero, runs the daemon as that user and group (65534 is
	// nobody), without root's privileges.
	UID int
	// NoWait returns as soon as the process runs, without waiting for it
	// to be Connected.
	NoWait bool
}

// Daemon is a "microlink up" process.
type Daemon struct {
	Bin, StateDir string
	Opts          DaemonOptions

	cmd     *exec.Cmd
	logs    *lockedBuffer
	done    chan struct{}
	exitErr error
}

// StartDaemon runs "microlink up" with a fresh state directory and waits
// until its local API reports it Connected. It is stopped with SIGTERM
// when t ends; its log is printed if t failed.
func StartDaemon(t T, o DaemonOptions) *Daemon {
	t.Helper()
	// A short directory: the socket's path must fit in 108 bytes.
	dir, err := os.MkdirTemp("", "mlcli-")
	if err != nil {
		t.Fatalf("%v", err)
	}
	d := &Daemon{Bin: MicrolinkCLI(t), StateDir: dir, Opts: o}
	if o.UID != 0 {
		os.Chown(dir, o.UID, o.UID)
	}
	t.Cleanup(func() {
		d.Stop()
		if t.Failed() || os.Getenv("MICROLINK_TEST_DEBUG") != "" {
			t.Logf("log of microlink up %s:\n%s", o.Hostname, tailLines(d.Log(), 150))
		}
		os.RemoveAll(dir)
	})
	d.start(t)
	if !o.NoWait {
		d.WaitConnected(t, 30*time.Second)
	}
	return d
}

// Restart starts the daemon again with the same state directory and
// options, after it exited or was killed, and waits until it is
// Connected.
func (d *Daemon) Restart(t T) {
	t.Helper()
	d.start(t)
	d.WaitConnected(t, 30*time.Second)
}

func (d *Daemon) start(t T) {
	t.Helper()
	o := d.Opts
	args := []string{"up", "--authkey", o.AuthKey, "--hostname", o.Hostname, "--login-server", o.ControlURL,
		"--statedir", d.StateDir, "--port", "0", "--verbose"}
	args = append(args, o.Args...)
	name := d.Bin
	if o.UID != 0 {
		id := strconv.Itoa(o.UID)
		args = append([]string{"--reuid=" + id, "--regid=" + id, "--clear-groups", "--inh-caps=-all", d.Bin}, args...)
		name = "setpriv"
	}
	d.cmd = NetnsCommand(o.Netns, name, args...)
	if d.logs == nil {
		d.logs = &lockedBuffer{}
	}
	d.cmd.Stdout, d.cmd.Stderr = d.logs, d.logs
	d.done = make(chan struct{})
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("starting microlink up: %v", err)
	}
	done := d.done
	go func() {
		d.exitErr = d.cmd.Wait()
		close(done)
	}()
}

// WaitConnected waits until the daemon's status is Connected, and fails t
// if it exits or the time runs out first.
func (d *Daemon) WaitConnected(t T, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		select {
		case <-d.done:
			t.Fatalf("microlink up %s exited: %v\n%s", d.Opts.Hostname, d.exitErr, tailLines(d.Log(), 60))
		default:
		}
		st, err := d.Status()
		if err == nil && st.State == "Running" {
			return
		}
		last = fmt.Sprint(st.State, err)
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("microlink up %s not Connected after %v: %s", d.Opts.Hostname, timeout, last)
}

// Exited is closed when the process has exited; ExitErr then tells how.
func (d *Daemon) Exited() <-chan struct{} { return d.done }

// ExitErr is the process's exit status once Exited is closed.
func (d *Daemon) ExitErr() error { return d.exitErr }

// Stop sends SIGTERM and waits for the process to exit (SIGKILL after 10 s).
func (d *Daemon) Stop() {
	if d.cmd == nil || d.cmd.Process == nil {
		return
	}
	select {
	case <-d.done:
		return
	default:
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		d.cmd.Process.Kill()
		<-d.done
	}
}

// Kill kills the process with SIGKILL, leaving it no chance to clean up,
// and waits for it to be gone.
func (d *Daemon) Kill() {
	d.cmd.Process.Kill()
	<-d.done
}

// PID returns the process ID of the daemon (of "microlink up" itself:
// ip netns exec and setpriv exec it in their place).
func (d *Daemon) PID() int { return d.cmd.Process.Pid }

// Log returns what the process wrote so far.
func (d *Daemon) Log() string { return d.logs.String() }

// CLI runs another microlink command against the daemon (from the test's
// namespace: the local API is a unix socket).
func (d *Daemon) CLI(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, d.Bin, append(args, "--statedir", d.StateDir)...).CombinedOutput()
	return string(out), err
}

// CLIStatus is what "microlink status --json" says, in part, in a form
// the tests read easily.
type CLIStatus struct {
	State string // BackendState: "Running" when connected
	Self  struct {
		Name             string
		Addresses        []string // tailnet addresses
		NodeKey          string
		TUN              string   // the TUN device, "" in userspace mode
		AdvertisedRoutes []string // what the node offers
		ApprovedRoutes   []string // what control approved (Self.PrimaryRoutes)
		ExitNode         string   // the exit node in use, by host name
	}
	Peers []CLIPeer
}

// CLIPeer is a peer in CLIStatus.
type CLIPeer struct {
	Name           string // host name
	Addresses      []string
	Path           string // "direct", "derp" or ""
	Endpoint       string // the direct path's address
	DERPRegion     int
	Routes         []string // approved for the peer: subnets, and the exit routes if it offers them
	AcceptedRoutes []string // those this node uses
	ExitNodeOption bool
	ExitNode       bool // this node's exit node
}

// statusJSON is the part of "microlink status --json" (tailscale's field
// names, and microlink's own) that CLIStatus holds.
type statusJSON struct {
	BackendState     string
	TailscaleIPs     []string
	TUNName          string
	AdvertisedRoutes []string
	Self             *peerJSON
	Peer             map[string]*peerJSON
}

type peerJSON struct {
	HostName       string
	PublicKey      string
	TailscaleIPs   []string
	PrimaryRoutes  []string
	AcceptedRoutes []string
	ExitNode       bool
	ExitNodeOption bool
	CurAddr        string
	Path           string
	DERPRegion     int
}

// Status returns the daemon's "status --json".
func (d *Daemon) Status() (CLIStatus, error) {
	var st CLIStatus
	out, err := d.CLI("status", "--json")
	if err != nil {
		return st, fmt.Errorf("%v: %s", err, out)
	}
	var j statusJSON
	if err := json.Unmarshal([]byte(out), &j); err != nil {
		return st, err
	}
	st.State = j.BackendState
	st.Self.Addresses = j.TailscaleIPs
	st.Self.TUN = j.TUNName
	st.Self.AdvertisedRoutes = j.AdvertisedRoutes
	if j.Self != nil {
		st.Self.Name, st.Self.NodeKey, st.Self.ApprovedRoutes = j.Self.HostName, j.Self.PublicKey, j.Self.PrimaryRoutes
	}
	for _, p := range j.Peer {
		cp := CLIPeer{Name: p.HostName, Addresses: p.TailscaleIPs, Path: p.Path, Endpoint: p.CurAddr, DERPRegion: p.DERPRegion,
			Routes: slices.Clone(p.PrimaryRoutes), AcceptedRoutes: p.AcceptedRoutes, ExitNodeOption: p.ExitNodeOption, ExitNode: p.ExitNode}
		if p.ExitNodeOption {
			cp.Routes = append(cp.Routes, "0.0.0.0/0", "::/0")
		}
		if p.ExitNode {
			st.Self.ExitNode = p.HostName
		}
		st.Peers = append(st.Peers, cp)
	}
	return st, nil
}

// Peer returns the peer named name in the daemon's status.
func (st CLIStatus) Peer(name string) (CLIPeer, bool) {
	for _, p := range st.Peers {
		if p.Name == name {
			return p, true
		}
	}
	return CLIPeer{}, false
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

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
