package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"tailscale.com/ipn/ipnstate"
)

func TestMain(m *testing.M) { os.Exit(RunInNetns(m)) }

// TestControlRouting checks that paths testcontrol does not serve get a
// 404 instead of reaching it (it panics on unknown paths).
func TestControlRouting(t *testing.T) {
	l := Start(t, Options{})
	for path, want := range map[string]int{
		"/":              http.StatusNotFound,
		"/favicon.ico":   http.StatusNotFound,
		"/derp":          http.StatusNotFound,
		"/generate_204":  http.StatusNoContent,
		"/key?v=142":     http.StatusOK,
		"/login/whatnot": http.StatusNotFound,
	} {
		res, err := http.Get(l.ControlURL + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		res.Body.Close()
		if res.StatusCode != want {
			t.Errorf("GET %s: status %d, want %d", path, res.StatusCode, want)
		}
	}
}

// TestListenAddr checks that every server listens on Options.ListenAddr
// and that the control URL and DERP map name it.
func TestListenAddr(t *testing.T) {
	addr := netip.MustParseAddr("127.0.0.2") // on lo, but not where httptest listens
	l := Start(t, Options{ListenAddr: addr})
	if l.ListenAddr() != addr {
		t.Fatalf("ListenAddr() = %v", l.ListenAddr())
	}
	if !strings.HasPrefix(l.ControlURL, "http://127.0.0.2:") || !strings.HasPrefix(l.DERPURL, "https://127.0.0.2:") {
		t.Fatalf("control %s, DERP %s: not on %v", l.ControlURL, l.DERPURL, addr)
	}
	if l.STUNAddr.Addr() != addr {
		t.Fatalf("STUN on %v", l.STUNAddr)
	}
	n := l.DERPMap.Regions[DERPRegionID].Nodes[0]
	if n.HostName != "127.0.0.2" || n.IPv4 != "127.0.0.2" {
		t.Fatalf("DERP node %s / %s", n.HostName, n.IPv4)
	}
	res, err := http.Get(l.ControlURL + "/key?v=142")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	c, err := net.Dial("tcp", net.JoinHostPort(n.IPv4, fmt.Sprint(n.DERPPort)))
	if err != nil {
		t.Fatalf("DERP port: %v", err)
	}
	c.Close()
	if l.trap.Listener.Addr().(*net.TCPAddr).AddrPort().Addr() != addr {
		t.Fatalf("proxy trap on %v", l.trap.Listener.Addr())
	}
}

// TestRestartControlCutsConnections checks that RestartControl drops
// established connections and serves again on the same address.
func TestRestartControlCutsConnections(t *testing.T) {
	l := Start(t, Options{})
	addr := strings.TrimPrefix(l.ControlURL, "http://")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Make sure the server has accepted the connection.
	if _, err := c.Write([]byte("GET /generate_204 HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 512)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(buf); err != nil || !bytes.Contains(buf[:n], []byte("204")) {
		t.Fatalf("first response %q, %v", buf[:n], err)
	}

	l.RestartControl(t)

	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(buf); err == nil {
		t.Fatalf("old connection still open after restart: read %q", buf[:n])
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("old connection still open after restart: read timed out")
	}
	res, err := http.Get(l.ControlURL + "/generate_204")
	if err != nil {
		t.Fatalf("after restart: %v", err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNoContent {
		t.Fatalf("after restart: status %d", res.StatusCode)
	}
}

// TestPeers runs real clients against the lab: two tailscaled (one in TUN
// mode when possible) and later a tsnet peer.
func TestPeers(t *testing.T) {
	l := Start(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()

	tun := TUNAvailable() == nil
	if tun {
		t.Logf("alpha uses TUN in network namespace %s", os.Getenv(envNetns))
	} else {
		t.Logf("no TUN peer: %v", TUNAvailable())
	}
	a := l.StartTailscaled(t, TSOptions{Hostname: "alpha", TUN: tun})
	b := l.StartTailscaled(t, TSOptions{Hostname: "beta"})
	if a.IPv4() == b.IPv4() || !a.IPv4().IsValid() {
		t.Fatalf("addresses: alpha %v, beta %v", a.IPv4(), b.IPv4())
	}

	pa, err := a.WaitPeer(ctx, "beta")
	if err != nil {
		t.Fatalf("alpha: %v", err)
	}
	if _, err := b.WaitPeer(ctx, "alpha"); err != nil {
		t.Fatalf("beta: %v", err)
	}
	if !containsAddr(pa.TailscaleIPs, b.IPv4()) {
		t.Fatalf("alpha sees beta at %v, beta has %v", pa.TailscaleIPs, b.IPv4())
	}

	pingUntil(ctx, t, a, b.IPv4(), "disco")
	pingUntil(ctx, t, b, a.IPv4(), "disco")
	pingUntil(ctx, t, a, b.IPv4(), "TSMP")

	// The CLI works too; --until-direct=false so that a DERP path counts.
	if out, err := a.CLI(ctx, "ping", "--until-direct=false", "--c=1", "--timeout=5s", b.IPv4().String()); err != nil {
		t.Fatalf("tailscale ping: %v\n%s", err, out)
	}

	if tun {
		if _, err := exec.LookPath("ping"); err != nil {
			t.Fatalf("ping command missing (install iputils-ping): %v", err)
		}
		out, err := Command(ctx, "ping", "-c", "2", "-W", "5", b.IPv4().String()).CombinedOutput()
		if err != nil {
			t.Fatalf("OS ping of beta through TUN: %v\n%s", err, out)
		}
		t.Logf("OS ping of beta through TUN:\n%s", out)
	}

	l.RestartControl(t)
	// A node joining after the restart proves that both daemons polled
	// the restarted server again.
	g := StartTSNet(t, l, "gamma")
	g4, _ := g.TailscaleIPs()
	for _, d := range []*Tailscaled{a, b} {
		p, err := d.WaitPeer(ctx, "gamma")
		if err != nil {
			t.Fatalf("%s after control restart: %v", d.Hostname, err)
		}
		if !containsAddr(p.TailscaleIPs, g4) {
			t.Fatalf("%s sees gamma at %v, gamma has %v", d.Hostname, p.TailscaleIPs, g4)
		}
		st, err := d.Status(ctx)
		if err != nil || st.BackendState != "Running" {
			t.Fatalf("%s after restart: %v, %v", d.Hostname, st.BackendState, err)
		}
	}
	pingUntil(ctx, t, b, g4, "disco")

	if tun {
		// A UDP socket of the test process reaches gamma through the TUN.
		pc, err := g.ListenPacket("udp", netip.AddrPortFrom(g4, 0).String())
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		go echoOnce(pc)
		c, err := net.Dial("udp", pc.LocalAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		got := make([]byte, 64)
		for i := 0; ; i++ {
			if ctx.Err() != nil {
				t.Fatal("no UDP echo from gamma through TUN")
			}
			c.Write([]byte("hello gamma"))
			c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			n, err := c.Read(got)
			if err == nil {
				if string(got[:n]) != "hello gamma" {
					t.Fatalf("UDP echo %q", got[:n])
				}
				t.Logf("UDP echo from gamma through TUN after %d tries", i+1)
				break
			}
		}
	}
}

// TestDERPOnly checks that peers which never use direct UDP reach each
// other through the lab's DERP server.
func TestDERPOnly(t *testing.T) {
	l := Start(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := l.StartTailscaled(t, TSOptions{Hostname: "delta", NeverDirect: true})
	b := l.StartTailscaled(t, TSOptions{Hostname: "epsilon", NeverDirect: true})
	if _, err := a.WaitPeer(ctx, "epsilon"); err != nil {
		t.Fatal(err)
	}
	for _, res := range []*ipnstate.PingResult{
		pingUntil(ctx, t, a, b.IPv4(), "disco"),
		pingUntil(ctx, t, b, a.IPv4(), "disco"),
	} {
		if res.DERPRegionID != DERPRegionID || res.Endpoint != "" {
			t.Errorf("ping went via DERP region %d, endpoint %q; want DERP region %d only", res.DERPRegionID, res.Endpoint, DERPRegionID)
		}
	}
}

// pingUntil pings until one reply arrives, since the first pings may race
// with path setup.
func pingUntil(ctx context.Context, t *testing.T, from *Tailscaled, to netip.Addr, typ string) *ipnstate.PingResult {
	t.Helper()
	var lastErr error
	for ctx.Err() == nil {
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		res, err := from.Ping(pctx, to, typ)
		cancel()
		if err == nil {
			t.Logf("%s ping %s -> %v: %.2f ms, endpoint %q, DERP %d", typ, from.Hostname, to, res.LatencySeconds*1000, res.Endpoint, res.DERPRegionID)
			return res
		}
		lastErr = err
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s ping %s -> %v: %v", typ, from.Hostname, to, lastErr)
	return nil
}

func containsAddr(list []netip.Addr, a netip.Addr) bool {
	for _, x := range list {
		if x == a {
			return true
		}
	}
	return false
}

func echoOnce(pc net.PacketConn) {
	buf := make([]byte, 64)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		pc.WriteTo(buf[:n], from)
	}
}

func TestBinariesFromEnvMissing(t *testing.T) {
	t.Setenv(EnvBinDir, t.TempDir())
	if _, _, err := findOrBuild(); err == nil || !strings.Contains(err.Error(), EnvBinDir) {
		t.Fatalf("empty %s: err = %v, want an error naming it", EnvBinDir, err)
	}
}

var _ T = (*testing.T)(nil)

// TestRunner checks the Runner's T behaviour: Fatalf becomes an error
// from Do, cleanups run in reverse order at Close, and TempDir
// directories are distinct and removed at Close.
func TestRunner(t *testing.T) {
	var logs []string
	r := NewRunner("runner test", func(format string, args ...any) {
		logs = append(logs, fmt.Sprintf(format, args...))
	})
	var order []int
	r.Cleanup(func() { order = append(order, 1) })
	r.Cleanup(func() { order = append(order, 2) })
	r.Cleanup(func() { r.Fatalf("failing cleanup") })
	r.Cleanup(func() { order = append(order, 3) })

	r.Logf("hello %d", 42)
	if len(logs) != 1 || logs[0] != "hello 42" {
		t.Fatalf("logs = %q", logs)
	}
	if r.Failed() {
		t.Fatal("Failed before any failure")
	}
	if err := r.Do(func() {}); err != nil {
		t.Fatalf("Do of a passing func: %v", err)
	}
	reached := false
	err := r.Do(func() {
		r.Fatalf("broke %s", "it")
		reached = true
	})
	var fe *FatalError
	if !errors.As(err, &fe) || fe.Msg != "broke it" || err.Error() != "runner test: broke it" {
		t.Fatalf("Do = %v, want the FatalError of Fatalf", err)
	}
	if reached || !r.Failed() {
		t.Fatalf("after Fatalf: reached = %v, Failed = %v", reached, r.Failed())
	}

	d1, d2 := r.TempDir(), r.TempDir()
	if d1 == d2 {
		t.Fatalf("TempDir returned %s twice", d1)
	}
	for _, d := range []string{d1, d2} {
		if fi, err := os.Stat(d); err != nil || !fi.IsDir() {
			t.Fatalf("TempDir %s: %v", d, err)
		}
	}
	if err := os.WriteFile(filepath.Join(d1, "f"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}

	if err := r.Close(); err == nil || !strings.Contains(err.Error(), "failing cleanup") {
		t.Fatalf("Close = %v, want the failing cleanup's error", err)
	}
	if !slices.Equal(order, []int{3, 2, 1}) {
		t.Fatalf("cleanup order %v, want [3 2 1]", order)
	}
	for _, d := range []string{d1, d2, filepath.Dir(d1)} {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Fatalf("%s still there after Close: %v", d, err)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	ran := false
	r.Cleanup(func() { ran = true })
	if !ran {
		t.Fatal("Cleanup after Close did not run at once")
	}
	if err := r.Do(func() { r.TempDir() }); err == nil {
		t.Fatal("TempDir after Close succeeded")
	}
}

// TestRunnerLab starts a lab and a tsnet peer through a Runner, as a
// program would, and checks that Close stops them.
func TestRunnerLab(t *testing.T) {
	r := NewRunner("lab", t.Logf)
	defer r.Close()
	var l *Lab
	var dir string
	if err := r.Do(func() {
		l = Start(r, Options{})
		s := StartTSNet(r, l, "runner-peer")
		dir = s.Dir
	}); err != nil {
		t.Fatal(err)
	}
	res, err := http.Get(l.ControlURL + "/generate_204")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if err := r.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := http.Get(l.ControlURL + "/generate_204"); err == nil {
		t.Fatal("control server still serving after Close")
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("tsnet directory %s still there after Close: %v", dir, err)
	}
}

// TestTailscaledControlOffLoopback checks that a tailscaled in the test's
// namespace keeps control after a reconnect when the lab listens on a
// non-loopback address (tailscaled would then try HTTPS on port 443).
func TestTailscaledControlOffLoopback(t *testing.T) {
	if !InNetns() {
		t.Skip("needs root and the private namespace of RunInNetns")
	}
	// An address on lo, as one on a veth would be: not loopback, not
	// private.
	addr := netip.MustParseAddr("198.18.9.1")
	if out, err := exec.Command("ip", "addr", "add", addr.String()+"/32", "dev", "lo").CombinedOutput(); err != nil {
		t.Fatalf("ip addr add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "addr", "del", addr.String()+"/32", "dev", "lo").Run() })
	l := Start(t, Options{ListenAddr: addr})
	ts := l.StartTailscaled(t, TSOptions{Hostname: "ts-a"})
	l.RestartControl(t)
	// A node that joins after the restart shows up only on a map stream
	// that tailscaled opened again.
	StartNode(t, NodeOptions{ControlURL: l.ControlURL, AuthKey: l.AuthKey, Hostname: "ml-b"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := ts.WaitPeer(ctx, "ml-b"); err != nil {
		t.Fatalf("tailscaled after the control restart: %v", err)
	}
}
