package tcp

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
)

// TestErrorsMatchErrno: the errors applications see match the kernel's
// errno values and carry no package prefix.
func TestErrorsMatchErrno(t *testing.T) {
	for _, tc := range []struct {
		err   error
		errno error
	}{
		{ErrRefused, syscall.ECONNREFUSED}, {ErrReset, syscall.ECONNRESET}, {ErrTimeout, syscall.ETIMEDOUT},
		{ErrAborted, syscall.ECONNABORTED}, {errTooMany, syscall.ENOBUFS}, {errNoPorts, syscall.EADDRNOTAVAIL},
		{errWriteClosed, syscall.EPIPE}, {ErrClosed, net.ErrClosed},
	} {
		if !errors.Is(tc.err, tc.errno) || strings.HasPrefix(tc.err.Error(), "tcp:") {
			t.Errorf("%v: not %v, or prefixed", tc.err, tc.errno)
		}
	}
	var ne net.Error
	if !errors.As(ErrTimeout, &ne) || !ne.Timeout() {
		t.Error("ErrTimeout is not a timeout")
	}
	a, b, _ := pair(t, fastConfig(), impairments{})
	_, err := a.Dial(context.Background(), addrA4, netip.AddrPortFrom(addrB4, 81))
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial to a closed port: %v", err)
	}
	if _, err := b.Listen(80); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Listen(80); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("second listener on a port: %v", err)
	}
}

// TestListenPicksPort: Listen(0) picks a free ephemeral port, which can be
// dialed.
func TestListenPicksPort(t *testing.T) {
	a, b, _ := pair(t, fastConfig(), impairments{})
	seen := map[uint16]bool{}
	for range 20 {
		l, err := b.Listen(0)
		if err != nil {
			t.Fatal(err)
		}
		if p := l.Port(); p < 49152 || seen[p] {
			t.Fatalf("port %d", p)
		}
		seen[l.Port()] = true
		if l.Addr().(*net.TCPAddr).Port != int(l.Port()) {
			t.Fatalf("Addr %v, port %d", l.Addr(), l.Port())
		}
	}
	l, _ := b.Listen(0)
	c, err := a.Dial(context.Background(), addrA4, netip.AddrPortFrom(addrB4, l.Port()))
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}
