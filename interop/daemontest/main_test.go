package daemontest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/microlink-go/microlink/interop/lab"
)

func TestMain(m *testing.M) {
	code := lab.RunInNetns(m)
	if cliBuild.dir != "" {
		os.RemoveAll(cliBuild.dir)
	}
	os.Exit(code)
}

// testVersion is stamped into the CLI built for these tests.
const testVersion = "9.8.7-daemontest"

var cliBuild struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// microlinkCLI builds the microlink command once, with testVersion.
func microlinkCLI(t *testing.T) string {
	t.Helper()
	cliBuild.once.Do(func() {
		cliBuild.dir, cliBuild.err = os.MkdirTemp("", "daemontest-cli-")
		if cliBuild.err != nil {
			return
		}
		cliBuild.path = filepath.Join(cliBuild.dir, "microlink")
		out, err := exec.Command("go", "build", "-buildvcs=false",
			"-ldflags=-X github.com/microlink-go/microlink.Version="+testVersion,
			"-o", cliBuild.path, "github.com/microlink-go/microlink/cmd/microlink").CombinedOutput()
		if err != nil {
			cliBuild.err = fmt.Errorf("go build microlink: %v\n%s", err, out)
		}
	})
	if cliBuild.err != nil {
		t.Fatal(cliBuild.err)
	}
	return cliBuild.path
}

// logBuffer collects a process's output.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// daemon is a running "microlink up".
type daemon struct {
	bin, stateDir string
	cmd           *exec.Cmd
	logs          *logBuffer
	done          chan struct{}
}

// startDaemon runs "microlink up" against the lab with extra flags and
// waits until status --json says Running.
func startDaemon(t *testing.T, l *lab.Lab, hostname string, extra ...string) *daemon {
	t.Helper()
	// A short directory: the socket's path must fit in 108 bytes.
	dir, err := os.MkdirTemp("", "mld-")
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"up", "--authkey", l.AuthKey, "--hostname", hostname, "--login-server", l.ControlURL,
		"--statedir", dir, "--port", "0"}, extra...)
	d := runDaemon(t, exec.Command(microlinkCLI(t), args...), dir)
	d.waitState(t, "Running", 30*time.Second)
	return d
}

// runDaemon starts cmd, a daemon keeping its state in dir, and stops it
// at the end of the test.
func runDaemon(t *testing.T, cmd *exec.Cmd, dir string) *daemon {
	t.Helper()
	d := &daemon{bin: microlinkCLI(t), stateDir: dir, cmd: cmd, logs: &logBuffer{}, done: make(chan struct{})}
	d.cmd.Stdout, d.cmd.Stderr = d.logs, d.logs
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(10 * time.Second):
			d.cmd.Process.Kill()
			<-d.done
		}
		if t.Failed() {
			t.Logf("log of microlink up:\n%s", d.logs.String())
		}
		os.RemoveAll(dir)
	})
	return d
}

// cli runs a microlink command against the daemon.
func (d *daemon) cli(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, d.bin, append(args, "--statedir", d.stateDir)...).CombinedOutput()
	return string(out), err
}

// statusJSON is what these tests read of status --json.
type statusJSON struct {
	BackendState string
	TailscaleIPs []string
	Self         struct {
		HostName, DNSName string
		Tags              []string
	}
	Peer map[string]struct {
		HostName, DNSName string
		TailscaleIPs      []string
		Online            bool
	}
	User map[string]struct{ LoginName string }
}

func (d *daemon) status(t *testing.T) statusJSON {
	t.Helper()
	var st statusJSON
	out, err := d.cli("status", "--json")
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	return st
}

func (d *daemon) waitState(t *testing.T, state string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		out, err := d.cli("status", "--json")
		var st statusJSON
		if err == nil && json.Unmarshal([]byte(out), &st) == nil && st.BackendState == state {
			return
		}
		select {
		case <-d.done:
			t.Fatalf("microlink up exited: %v\n%s", d.cmd.ProcessState, d.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("microlink never reached %s: %v\n%s", state, err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// listenAddr returns the address the daemon logged for a server whose
// log message is msg, such as "SOCKS5 proxy listening".
func (d *daemon) listenAddr(t *testing.T, msg, key string) string {
	t.Helper()
	re := regexp.MustCompile(`msg="` + regexp.QuoteMeta(msg) + `" ` + key + `=(\S+)`)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if m := re.FindStringSubmatch(d.logs.String()); m != nil {
			return strings.Trim(m[1], `"`)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no %q in the log:\n%s", msg, d.logs.String())
	return ""
}

// alive checks that the daemon still runs and answers.
func (d *daemon) alive(t *testing.T) {
	t.Helper()
	select {
	case <-d.done:
		t.Fatalf("microlink up exited: %v\n%s", d.cmd.ProcessState, d.logs.String())
	default:
	}
	if st := d.status(t); st.BackendState != "Running" {
		t.Fatalf("state %s", st.BackendState)
	}
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
