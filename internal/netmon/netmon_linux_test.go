package netmon

import (
	"log/slog"
	"net/netip"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// ip runs the ip command and fails the test if it fails.
func ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// ipBatch runs several ip commands in one process, as close together as
// a DHCP client's changes.
func ipBatch(t *testing.T, cmds ...string) {
	t.Helper()
	cmd := exec.Command("ip", "-batch", "-")
	cmd.Stdin = strings.NewReader(strings.Join(cmds, "\n") + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ip -batch: %v\n%s", err, out)
	}
}

// addVeth adds a veth pair, deleted when the test ends.
func addVeth(t *testing.T, a, b string) {
	t.Helper()
	ip(t, "link", "add", a, "type", "veth", "peer", "name", b)
	t.Cleanup(func() { exec.Command("ip", "link", "del", a).Run() })
}

type change struct{ old, new State }

func startMonitor(t *testing.T, opts Options) (*Monitor, chan change) {
	t.Helper()
	changes := make(chan change, 16)
	opts.OnChange = func(old, new State) { changes <- change{old, new} }
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	m, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, changes
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func expectChange(t *testing.T, changes chan change, what string) change {
	t.Helper()
	select {
	case c := <-changes:
		t.Logf("%s: %s", what, c.old.Diff(c.new))
		return c
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no change reported within 10 s", what)
		return change{}
	}
}

func expectNoChange(t *testing.T, changes chan change, d time.Duration, what string) {
	t.Helper()
	select {
	case c := <-changes:
		t.Fatalf("%s: reported as a change: %s", what, c.old.Diff(c.new))
	case <-time.After(d):
	}
}

// waitChecks waits until the monitor has looked at the State more than n
// times.
func waitChecks(t *testing.T, m *Monitor, n int64, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for m.checks.Load() <= n {
		if time.Now().After(deadline) {
			t.Fatalf("%s: the monitor never looked at the network", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func monitorGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "internal/netmon.(*Monitor)") {
			n++
		}
	}
	return n
}

// TestMonitorNetlink changes the network of a namespace of the test's own
// and checks which changes the monitor reports: new addresses, default
// routes, a renumbering (once, however many events it makes) and an
// interface going down; not routes to other networks, interfaces without
// a usable address, or an ignored interface.
func TestMonitorNetlink(t *testing.T) {
	needNetns(t)
	addVeth(t, "va", "vb")
	ip(t, "link", "set", "va", "up")
	ip(t, "link", "set", "vb", "up")
	addVeth(t, "mltun0", "mltun0p")
	ip(t, "link", "set", "mltun0p", "up")
	m, changes := startMonitor(t, Options{
		Ignore: func(name string, _ []netip.Prefix) bool { return name == "mltun0" },
	})
	if m.closeFn == nil {
		t.Fatal("the monitor polls instead of listening to netlink")
	}
	if st := m.State(); len(st.Interfaces) != 0 || len(st.DefaultRoutes) != 0 {
		t.Fatalf("initial state %+v, want nothing (only link-local addresses)", st)
	}

	ip(t, "addr", "add", "198.18.5.2/24", "dev", "va")
	c := expectChange(t, changes, "an address added")
	if got := c.new.Interfaces["va"]; !slices.Equal(got, []netip.Prefix{pfx("198.18.5.2/24")}) {
		t.Fatalf("va has %v", got)
	}

	ip(t, "route", "add", "default", "via", "198.18.5.1")
	c = expectChange(t, changes, "a default route added")
	wantRoute := []Route{{Gateway: netip.MustParseAddr("198.18.5.1"), Interface: "va"}}
	if !slices.Equal(c.new.DefaultRoutes, wantRoute) {
		t.Fatalf("default routes %v, want %v", c.new.DefaultRoutes, wantRoute)
	}

	// A route to another network does not even make the monitor look.
	checks := m.checks.Load()
	ip(t, "route", "add", "198.19.0.0/24", "via", "198.18.5.1")
	expectNoChange(t, changes, 3*DefaultQuiet, "a route to another network")
	if n := m.checks.Load(); n != checks {
		t.Fatalf("a route to another network made the monitor look %d times", n-checks)
	}
	// New interfaces with only link-local addresses, and addresses on the
	// ignored interface, make it look but are no change.
	addVeth(t, "vc", "vd")
	ip(t, "link", "set", "vc", "up")
	ip(t, "link", "set", "vd", "up")
	ip(t, "addr", "add", "198.18.9.1/24", "dev", "mltun0")
	ip(t, "link", "set", "mltun0", "up")
	waitChecks(t, m, checks, "new interfaces")
	expectNoChange(t, changes, 3*DefaultQuiet, "interfaces without usable addresses, an ignored interface")
	if _, ok := m.State().Interfaces["mltun0"]; ok {
		t.Fatal("the ignored interface is in the state")
	}

	// A renumbering as a DHCP client does it: the old address goes (and
	// the default route with it), the new one comes, the route again.
	ipBatch(t,
		"addr del 198.18.5.2/24 dev va",
		"addr add 198.18.5.20/24 dev va",
		"route add default via 198.18.5.1",
	)
	c = expectChange(t, changes, "a renumbering")
	if !slices.Equal(c.old.Interfaces["va"], []netip.Prefix{pfx("198.18.5.2/24")}) ||
		!slices.Equal(c.new.Interfaces["va"], []netip.Prefix{pfx("198.18.5.20/24")}) {
		t.Fatalf("renumbering reported as %s", c.old.Diff(c.new))
	}
	if !slices.Equal(c.new.DefaultRoutes, wantRoute) {
		t.Fatalf("default routes after the renumbering %v, want %v", c.new.DefaultRoutes, wantRoute)
	}
	expectNoChange(t, changes, 3*DefaultQuiet, "the rest of the renumbering")

	// The default route moves to another gateway.
	ip(t, "route", "replace", "default", "via", "198.18.5.254")
	c = expectChange(t, changes, "the default route moved")
	if len(c.new.DefaultRoutes) != 1 || c.new.DefaultRoutes[0].Gateway != netip.MustParseAddr("198.18.5.254") {
		t.Fatalf("default routes %v", c.new.DefaultRoutes)
	}

	// The interface goes down: its addresses and route no longer count.
	ip(t, "link", "set", "va", "down")
	c = expectChange(t, changes, "the interface went down")
	if len(c.new.Interfaces) != 0 || len(c.new.DefaultRoutes) != 0 {
		t.Fatalf("state after va went down: %+v", c.new)
	}

	m.Close()
	if n := monitorGoroutines(); n != 0 {
		t.Fatalf("%d monitor goroutines left after Close", n)
	}
	ip(t, "link", "set", "va", "up")
	ip(t, "addr", "add", "198.18.5.30/24", "dev", "va")
	expectNoChange(t, changes, 3*DefaultQuiet, "a change after Close")
}

// TestMonitorPolling: where there is no netlink, the monitor notices the
// same changes by looking every PollInterval.
func TestMonitorPolling(t *testing.T) {
	needNetns(t)
	addVeth(t, "pa", "pb")
	ip(t, "link", "set", "pa", "up")
	ip(t, "link", "set", "pb", "up")
	m, changes := startMonitor(t, Options{Poll: true, PollInterval: 100 * time.Millisecond})
	if m.closeFn != nil {
		t.Fatal("the monitor listens to netlink though told to poll")
	}
	ip(t, "addr", "add", "198.18.6.2/24", "dev", "pa")
	c := expectChange(t, changes, "an address added")
	if !slices.Equal(c.new.Interfaces["pa"], []netip.Prefix{pfx("198.18.6.2/24")}) {
		t.Fatalf("pa has %v", c.new.Interfaces["pa"])
	}
	ip(t, "addr", "del", "198.18.6.2/24", "dev", "pa")
	expectChange(t, changes, "an address removed")
	m.Close()
	if n := monitorGoroutines(); n != 0 {
		t.Fatalf("%d monitor goroutines left after Close", n)
	}
}
