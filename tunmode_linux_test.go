package microlink

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/microlink-go/microlink/internal/netlink"
	"github.com/microlink-go/microlink/internal/netlink/nltest"
	"github.com/microlink-go/microlink/internal/tun"
)

// TestTUNModeLifecycle starts a TUN-mode node in a network namespace of
// its own (with no control server to reach) and checks that Start sets up
// the device and rules, that the socket methods refuse, and that Close
// removes everything and stops every goroutine it started.
func TestTUNModeLifecycle(t *testing.T) {
	before := runtime.NumGoroutine()
	nltest.InNetns(t, func() {
		n, err := New(Config{TUN: "mltest9", ControlURL: "http://127.0.0.1:1", Port: -1, Logger: quietLogger(),
			AdvertiseRoutes: []netip.Prefix{netip.MustParsePrefix("198.19.9.0/24")}})
		if err != nil {
			t.Error(err)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		err = n.Start(ctx)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Start: %v", err)
		}
		if ifi, err := net.InterfaceByName("mltest9"); err != nil || ifi.MTU != tun.DefaultMTU {
			t.Errorf("device: %+v, %v", ifi, err)
		}
		nl, err := netlink.DialRoute()
		if err != nil {
			t.Error(err)
			return
		}
		defer nl.Close()
		if rules := ourRules(t, nl); rules != 8 {
			t.Errorf("%d routing rules, want 8", rules)
		}
		if b, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); strings.TrimSpace(string(b)) != "1" {
			t.Error("forwarding off for an advertised route")
		}
		if _, err := n.ListenUDP(1); !errors.Is(err, ErrTUNMode) {
			t.Errorf("ListenUDP: %v", err)
		}
		if _, err := n.ListenTCP(1); !errors.Is(err, ErrTUNMode) {
			t.Errorf("ListenTCP: %v", err)
		}
		// Dials go through the host's IP stack: here, with no route, it
		// refuses at once.
		if _, err := n.DialTCP(context.Background(), "198.18.9.9:1"); err == nil || errors.Is(err, ErrTUNMode) {
			t.Errorf("DialTCP: %v", err)
		}
		if st := n.Status(); st.TUN != "mltest9" || len(st.AdvertisedRoutes) != 1 {
			t.Errorf("status: %+v", st)
		}
		n.Close()
		if _, err := net.InterfaceByName("mltest9"); err == nil {
			t.Error("device left after Close")
		}
		if rules := ourRules(t, nl); rules != 0 {
			t.Errorf("%d routing rules left after Close", rules)
		}
		if b, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); strings.TrimSpace(string(b)) != "0" {
			t.Error("forwarding left on")
		}
	})
	for deadline := time.Now().Add(5 * time.Second); runtime.NumGoroutine() > before; {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines before, %d after:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func ourRules(t *testing.T, nl *netlink.Conn) int {
	n := 0
	for _, v6 := range []bool{false, true} {
		rs, err := nl.Rules(v6)
		if err != nil {
			t.Error(err)
		}
		for _, r := range rs {
			if r.Priority >= tun.RulePriority && r.Priority <= tun.RulePriority+60 {
				n++
			}
		}
	}
	return n
}
