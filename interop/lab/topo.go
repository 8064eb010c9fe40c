package lab

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

var netnsSeq atomic.Int32

// NewNetns creates a network namespace with loopback up, named after the
// process and label, and deletes it when t ends (with every interface and
// process-less socket in it).
func NewNetns(t T, label string) string {
	t.Helper()
	name := fmt.Sprintf("ml%d-%d%s", os.Getpid(), netnsSeq.Add(1), label)
	MustRun(t, "", "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "delete", name).CombinedOutput(); err != nil {
			t.Logf("ip netns delete %s: %v: %s", name, err, out)
		}
	})
	MustRun(t, name, "ip", "link", "set", "lo", "up")
	return name
}

// NetnsCommand returns a command that runs in namespace ns, or in the
// test's own for "".
func NetnsCommand(ns, name string, args ...string) *exec.Cmd {
	if ns == "" {
		return exec.Command(name, args...)
	}
	return exec.Command("ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// MustRun runs a command in namespace ns ("" for the test's own) and
// fails t if it fails. It returns the combined output.
func MustRun(t T, ns, name string, args ...string) string {
	t.Helper()
	out, err := NetnsCommand(ns, name, args...).CombinedOutput()
	if err != nil {
		where := ns
		if where == "" {
			where = "the test's namespace"
		}
		t.Fatalf("in %s: %s %s: %v\n%s", where, name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Veth joins namespaces a and b ("" for the test's own) with a veth pair:
// interface ifA with address addrA in a, ifB with addrB in b, both up.
// Interface names have at most 15 characters.
func Veth(t T, a, ifA string, addrA netip.Prefix, b, ifB string, addrB netip.Prefix) {
	t.Helper()
	args := []string{"link", "add", ifA, "type", "veth", "peer", "name", ifB}
	if b != "" {
		args = append(args, "netns", b)
	}
	MustRun(t, a, "ip", args...)
	MustRun(t, a, "ip", "addr", "add", addrA.String(), "dev", ifA)
	MustRun(t, a, "ip", "link", "set", ifA, "up")
	MustRun(t, b, "ip", "addr", "add", addrB.String(), "dev", ifB)
	MustRun(t, b, "ip", "link", "set", ifB, "up")
}

// Within runs f on an OS thread moved into namespace ns and returns f's
// error. Sockets f opens stay in ns while any goroutine uses them: a
// listener made there accepts connections inside ns, a connection dialled
// there leaves from ns. The thread moves back to its namespace afterwards;
// it is not left to die, since its death would kill any child process it
// had started with a parent-death signal (Pdeathsig, as the lab's
// re-executed test binary and the tests' Headscale use).
func Within(ns string, f func() error) error {
	h, err := os.Open("/run/netns/" + ns)
	if err != nil {
		return err
	}
	defer h.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(h.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		err = f()
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		} // else the thread stays locked and ends with this goroutine
		errc <- err
	}()
	return <-errc
}
