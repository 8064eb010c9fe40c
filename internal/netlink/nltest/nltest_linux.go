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
// goes away with the thread when f returns. Sockets f opens, netlink ones
// included, and commands it starts belong to that namespace, and so does
// what it reads under /proc/sys/net. The test is skipped without root or
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
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			t.Errorf("unshare: %v", err)
			return
		}
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
