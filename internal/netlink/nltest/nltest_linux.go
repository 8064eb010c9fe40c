package nltest

import (
	"net"
	"os"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/microlink-go/microlink/internal/netlink"
)

// InNetns runs f on an OS thread moved into a new network namespace, which
// goes away when f returns and nothing uses it any more. Sockets f opens,
// netlink ones included, and commands it starts belong to that namespace,
// and so does what it reads under /proc/sys/net. The thread moves back to
// its namespace afterwards. The test is skipped without root or
// /dev/net/tun.
func InNetns(t *testing.T, f func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for a network namespace")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skip("no /dev/net/tun")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			t.Error(err)
			return
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			t.Errorf("unshare: %v", err)
			return
		}
		defer func() {
			// Back to the test's namespace, so the thread may serve
			// other goroutines; if that fails, it ends with this one.
			if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
				runtime.UnlockOSThread()
			}
		}()
		nl, err := netlink.DialRoute()
		if err != nil {
			t.Error(err)
			return
		}
		defer nl.Close()
		lo, err := net.InterfaceByName("lo")
		if err != nil {
			t.Error(err)
			return
		}
		if err := nl.LinkSetUp(lo.Index); err != nil {
			t.Error(err)
			return
		}
		f()
	}()
	<-done
}
