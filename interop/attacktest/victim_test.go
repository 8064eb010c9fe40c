package attacktest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/microlink-go/microlink"
	"github.com/microlink-go/microlink/interop/lab"
)

// victimStats is what the victim program reports about itself (its
// Stats type).
type victimStats struct {
	Goroutines int
	HeapInuse  uint64
	HeapAlloc  uint64
	Sys        uint64
	FDs        int
	Node       microlink.Stats
}

// victimProc is the microlink node under attack, running the victim
// program in a process of its own.
type victimProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	out    *bufio.Scanner
	log    string // its stderr
	addr   netip.Addr
	mu     sync.Mutex // one stats query at a time
	exited chan struct{}
}

// buildVictim builds the victim program without the race detector, as
// microlink ships, into dir.
func buildVictim(t *testing.T, dir string) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	bin := filepath.Join(dir, "victim")
	goCmd, err := exec.LookPath("go")
	if err != nil {
		goCmd = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	cmd := exec.Command(goCmd, "build", "-o", bin, "./victim")
	cmd.Dir = filepath.Dir(file)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the victim: %v\n%s", err, out)
	}
	return bin
}

func startVictim(t *testing.T, bin string, l *lab.Lab) *victimProc {
	t.Helper()
	dir := t.TempDir()
	v := &victimProc{log: filepath.Join(dir, "victim.log"), exited: make(chan struct{})}
	logf, err := os.Create(v.log)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	v.cmd = exec.Command(bin, "-control", l.ControlURL, "-authkey", l.AuthKey, "-state", filepath.Join(dir, "state"),
		"-tcp", strconv.Itoa(victimTCPPort))
	v.cmd.Stderr = logf
	v.stdin, _ = v.cmd.StdinPipe()
	stdout, _ := v.cmd.StdoutPipe()
	v.out = bufio.NewScanner(stdout)
	v.out.Buffer(make([]byte, 64<<10), 1<<20)
	if err := v.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { v.cmd.Wait(); close(v.exited) }()
	t.Cleanup(func() {
		v.stdin.Close()
		select {
		case <-v.exited:
		case <-time.After(10 * time.Second):
			v.cmd.Process.Kill()
			<-v.exited
		}
		if t.Failed() {
			b, _ := os.ReadFile(v.log)
			if len(b) > 20000 {
				b = b[len(b)-20000:]
			}
			t.Logf("victim log (end):\n%s", b)
		}
	})
	ready := make(chan error, 1)
	go func() {
		var r struct{ Addresses []string }
		if !v.out.Scan() {
			ready <- fmt.Errorf("victim exited before it was ready: %v", v.out.Err())
			return
		}
		if err := json.Unmarshal(v.out.Bytes(), &r); err != nil {
			ready <- err
			return
		}
		for _, a := range r.Addresses {
			if ip, err := netip.ParseAddr(a); err == nil && ip.Is4() {
				v.addr = ip
			}
		}
		ready <- nil
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(40 * time.Second):
		t.Fatal("victim not ready within 40 s")
	}
	return v
}

// stats asks the victim for its figures; gc collects garbage first.
func (v *victimProc) stats(gc bool) (victimStats, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	cmd := "stats\n"
	if gc {
		cmd = "gc\n"
	}
	if _, err := io.WriteString(v.stdin, cmd); err != nil {
		return victimStats{}, err
	}
	if !v.out.Scan() {
		return victimStats{}, fmt.Errorf("victim gone: %v", v.out.Err())
	}
	var s victimStats
	err := json.Unmarshal(v.out.Bytes(), &s)
	return s, err
}

// logSize returns the size of the victim's log so far.
func (v *victimProc) logSize() int64 {
	fi, err := os.Stat(v.log)
	if err != nil {
		return 0
	}
	return fi.Size()
}
