package examplestest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
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
	"tailscale.com/tstest/integration/testcontrol"
)

func TestMain(m *testing.M) {
	code := lab.RunInNetns(m)
	builds.removeAll()
	os.Exit(code)
}

// startLab starts a lab whose control server marks every peer online, as
// Tailscale's does for connected nodes (testcontrol leaves it unset).
func startLab(t *testing.T) *lab.Lab {
	t.Helper()
	return lab.Start(t, lab.Options{
		ConfigureControl: func(s *testcontrol.Server) { s.AllOnline = true },
	})
}

// buildCache holds the example binaries, each built once per test binary.
type buildCache struct {
	mu   sync.Mutex
	dir  string
	bins map[string]string
}

var builds buildCache

// build builds the program at pkg (a package path of the product module)
// and returns the binary's path.
func build(t *testing.T, pkg string) string {
	t.Helper()
	builds.mu.Lock()
	defer builds.mu.Unlock()
	if bin, ok := builds.bins[pkg]; ok {
		return bin
	}
	if builds.dir == "" {
		dir, err := os.MkdirTemp("", "examplestest-")
		if err != nil {
			t.Fatal(err)
		}
		builds.dir, builds.bins = dir, map[string]string{}
	}
	bin := filepath.Join(builds.dir, strings.ReplaceAll(pkg, "/", "_"))
	if out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	builds.bins[pkg] = bin
	return bin
}

func (b *buildCache) removeAll() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dir != "" {
		os.RemoveAll(b.dir)
	}
}

const examples = "github.com/microlink-go/microlink/examples/"

// proc is a running example program. Its standard output is collected line
// by line; its standard error is shown in the test log if the test fails.
type proc struct {
	name string
	cmd  *exec.Cmd

	mu     sync.Mutex
	lines  []string
	more   chan struct{} // closed and replaced when a line arrives or output ends
	eof    bool
	stderr bytes.Buffer

	exited chan struct{} // closed when the process has exited
	err    error         // valid once exited is closed
}

// labEnv returns an environment in which no TS_ variable of the caller
// leaks into a program under test.
func labEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TS_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// start runs bin with args and env (nil: labEnv()). The process is killed,
// if still running, when the test ends.
func start(t *testing.T, name, bin string, env []string, args ...string) *proc {
	t.Helper()
	if env == nil {
		env = labEnv()
	}
	p := &proc{name: name, more: make(chan struct{}), exited: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = env
	p.cmd.Stderr = &lockedWriter{mu: &p.mu, w: &p.stderr}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	scanDone := make(chan struct{})
	go func() {
		defer close(scanDone)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			close(p.more)
			p.more = make(chan struct{})
			p.mu.Unlock()
		}
	}()
	go func() {
		<-scanDone // Wait closes the pipe: read it to the end first.
		p.err = p.cmd.Wait()
		p.mu.Lock()
		p.eof = true
		close(p.more)
		p.more = make(chan struct{})
		p.mu.Unlock()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			p.mu.Lock()
			t.Logf("%s stdout:\n%s\n%s stderr:\n%s", name, strings.Join(p.lines, "\n"), name, p.stderr.String())
			p.mu.Unlock()
		}
	})
	return p
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (w *lockedWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(b)
}

// output returns the lines printed so far.
func (p *proc) output() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.lines...)
}

// waitLines calls match with the lines printed so far, and again at every
// new line, until it returns true; it fails the test after d or when the
// program exits first.
func (p *proc) waitLines(t *testing.T, d time.Duration, what string, match func(lines []string) bool) {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		p.mu.Lock()
		lines, more, eof := append([]string(nil), p.lines...), p.more, p.eof
		p.mu.Unlock()
		if match(lines) {
			return
		}
		if eof {
			t.Fatalf("%s exited (%v) before printing %s", p.name, p.err, what)
		}
		select {
		case <-more:
		case <-timer.C:
			t.Fatalf("%s printed no %s within %v", p.name, what, d)
		}
	}
}

// waitLine waits for a line matching re and returns its submatches.
func (p *proc) waitLine(t *testing.T, d time.Duration, re *regexp.Regexp) []string {
	t.Helper()
	var m []string
	p.waitLines(t, d, fmt.Sprintf("line matching %q", re), func(lines []string) bool {
		for _, l := range lines {
			if m = re.FindStringSubmatch(l); m != nil {
				return true
			}
		}
		return false
	})
	return m
}

// wait waits up to d for the program to exit by itself and returns its
// exit error.
func (p *proc) wait(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case <-p.exited:
		return p.err
	case <-time.After(d):
		t.Fatalf("%s still running after %v", p.name, d)
		return nil
	}
}

// stop sends SIGTERM and checks that the program exits cleanly and soon.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Fatal(err)
	}
	if err := p.wait(t, 10*time.Second); err != nil {
		t.Fatalf("%s exited with %v after SIGTERM", p.name, err)
	}
}

// testCtx returns a context that ends after d or with the test.
func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
