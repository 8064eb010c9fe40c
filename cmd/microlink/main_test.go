package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/microlink-go/microlink"
	"github.com/microlink-go/microlink/internal/h1"
)

func runCLI(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestUsage(t *testing.T) {
	code, _, stderr := runCLI()
	if code != 2 || !strings.Contains(stderr, "usage: microlink <command>") {
		t.Fatalf("no args: code %d, %q", code, stderr)
	}
	code, _, stderr = runCLI("frobnicate")
	if code != 2 || !strings.Contains(stderr, `unknown command "frobnicate"`) {
		t.Fatalf("unknown command: code %d, %q", code, stderr)
	}
	code, _, _ = runCLI("--help")
	if code != 0 {
		t.Fatalf("--help: code %d", code)
	}
}

func TestVersion(t *testing.T) {
	code, out, _ := runCLI("version")
	if code != 0 || !strings.HasPrefix(out, "microlink ") {
		t.Fatalf("version: %d %q", code, out)
	}
}

func TestSubcommandHelp(t *testing.T) {
	for _, c := range []string{"up", "status", "ping", "logout", "version", "down", "ip", "whois", "netcheck"} {
		code, _, stderr := runCLI(c, "--help")
		if code != 0 || !strings.Contains(stderr, "usage: microlink "+c) {
			t.Errorf("%s --help: code %d, %q", c, code, stderr)
		}
	}
}

func TestBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"up", "--nope"}, "flag provided but not defined"},
		{[]string{"up", "--port", "70000"}, "not a port number"},
		{[]string{"up", "--port", "x"}, "invalid value"},
		{[]string{"up", "extra"}, "unexpected argument"},
		{[]string{"ping"}, "exactly one NAME or IP"},
		{[]string{"ping", "--tsmp", "--icmp", "x"}, "exclude each other"},
		{[]string{"ping", "-c", "-1", "x"}, "-c must be"},
		{[]string{"status", "--json=maybe"}, "invalid boolean"},
		{[]string{"ip", "-4", "-6"}, "exclude each other"},
		{[]string{"ip", "a", "b"}, "at most one peer"},
		{[]string{"whois"}, "exactly one IP"},
		{[]string{"up", "--socks5-server", "nocolon"}, "--socks5-server"},
		{[]string{"up", "--socks5-server", "user@localhost:1080"}, "USER:PASS@"},
	} {
		code, _, stderr := runCLI(tc.args...)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: code %d, stderr %q, want %q", tc.args, code, stderr, tc.want)
		}
	}
}

func TestUpBadConfig(t *testing.T) {
	code, _, stderr := runCLI("up", "--login-server", "ftp://x", "--statedir", t.TempDir())
	if code != 1 || !strings.Contains(stderr, "control URL") {
		t.Fatalf("code %d, %q", code, stderr)
	}
	// A corrupt state file is a clear error, and stays as it was.
	dir := t.TempDir()
	bad := []byte("{not json")
	os.WriteFile(filepath.Join(dir, "microlink.state"), bad, 0o600)
	code, _, stderr = runCLI("up", "--statedir", dir, "--login-server", "http://127.0.0.1:1")
	if code != 1 || !strings.Contains(stderr, "microlink.state") {
		t.Fatalf("corrupt state: code %d, %q", code, stderr)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "microlink.state")); !bytes.Equal(got, bad) {
		t.Fatal("corrupt state file was changed")
	}
}

// TestUpBadRoutes: malformed routes and route options are refused before
// the node starts.
func TestUpBadRoutes(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--advertise-routes", "198.19.1.0/33"}, 2, "not a CIDR prefix"},
		{[]string{"--advertise-routes", "198.19.1.0/24,nonsense"}, 2, `"nonsense" is not a CIDR prefix`},
		{[]string{"--advertise-routes", "198.19.1.1/24"}, 1, "did you mean 198.19.1.0/24"},
		{[]string{"--advertise-routes", "100.64.0.0/16"}, 1, "overlaps the tailnet"},
		{[]string{"--advertise-exit-node", "--exit-node", "100.64.0.3"}, 1, "cannot use an exit node and offer"},
		{[]string{"--exit-node", "198.18.0.9"}, 1, "not a tailnet address"},
		{[]string{"--tun=much-too-long-name"}, 1, "TUN device name"},
	} {
		args := append([]string{"up", "--login-server", "http://127.0.0.1:1", "--statedir", t.TempDir()}, tc.args...)
		code, _, stderr := runCLI(args...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: code %d, %q; want %d, %q", tc.args, code, stderr, tc.code, tc.want)
		}
	}
}

func TestTUNFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, ""},
		{[]string{"--tun"}, microlink.DefaultTUN},
		{[]string{"--tun=tail1"}, "tail1"},
		{[]string{"--tun=false"}, ""},
	} {
		fs := newFlagSet("up", "up", &bytes.Buffer{})
		var f tunFlag
		fs.Var(&f, "tun", "")
		if err := parseFlags(fs, tc.args); err != nil || string(f) != tc.want {
			t.Errorf("%v: %q, %v; want %q", tc.args, f, err, tc.want)
		}
	}
	routes, err := parseRoutes(" 198.19.1.0/24 ,2001:db8::/64", true)
	if err != nil || len(routes) != 4 || routes[2].String() != "0.0.0.0/0" || routes[3].String() != "::/0" {
		t.Errorf("parseRoutes: %v, %v", routes, err)
	}
}

func TestNoDaemon(t *testing.T) {
	dir := t.TempDir()
	code, _, stderr := runCLI("status", "--statedir", dir)
	if code != 1 || !strings.Contains(stderr, "no microlink running") {
		t.Fatalf("status without daemon: code %d, %q", code, stderr)
	}
	t.Setenv("TS_STATE_DIR", "")
	code, _, stderr = runCLI("status")
	if code != 1 || !strings.Contains(stderr, "--statedir") {
		t.Fatalf("status without location: code %d, %q", code, stderr)
	}
}

func TestSocketRefusesLiveDaemon(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	ln, err := listenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	srv := h1.Serve(ln, localAPI(&stubBackend{}), h1.ServerOptions{})
	defer srv.Close()
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, %v", st.Mode(), err)
	}
	if _, err := listenUnix(path); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Fatalf("second listener: %v", err)
	}
}

func TestFlagsAfterArguments(t *testing.T) {
	fs := newFlagSet("ping", "ping", &bytes.Buffer{})
	c := fs.Int("c", 4, "")
	tsmp := fs.Bool("tsmp", false, "")
	if err := parseFlags(fs, []string{"laptop", "-c", "2", "--tsmp"}); err != nil {
		t.Fatal(err)
	}
	if *c != 2 || !*tsmp || fs.NArg() != 1 || fs.Arg(0) != "laptop" {
		t.Fatalf("c=%d tsmp=%v args=%q", *c, *tsmp, fs.Args())
	}
}

func TestPingQuery(t *testing.T) {
	if got := pingQuery("my host", "TSMP", 0); got != "?target=my+host&type=TSMP" {
		t.Fatalf("query = %q", got)
	}
	// The same as url.Values.Encode, which the local API parses.
	q := url.Values{"target": {"a&b=c/ü"}, "type": {"disco"}, "timeout": {"1.5s"}}
	if got, want := pingQuery("a&b=c/ü", "disco", 1500*time.Millisecond), "?"+q.Encode(); got != want {
		t.Fatalf("query = %q, want %q", got, want)
	}
}

func TestLocalAPIRebind(t *testing.T) {
	calls := 0
	var fail error
	h := localAPI(&stubBackend{rebindF: func() error { calls++; return fail }})
	do := func(method string) int {
		return h(context.Background(), &h1.Request{Method: method, URL: &url.URL{Path: "/rebind"}}).Status
	}
	if code := do("POST"); code != http.StatusNoContent || calls != 1 {
		t.Fatalf("POST /rebind: code %d, %d calls", code, calls)
	}
	if code := do("GET"); code != http.StatusMethodNotAllowed || calls != 1 {
		t.Fatalf("GET /rebind: code %d, %d calls", code, calls)
	}
	fail = errors.New("no socket")
	if code := do("POST"); code != http.StatusInternalServerError || calls != 2 {
		t.Fatalf("failing rebind: code %d, %d calls", code, calls)
	}
}

// startAPI serves the local API with stub actions on a socket in a
// temporary directory.
func startAPI(t *testing.T, logout func() error) (path string, srv *h1.Server) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "api.sock")
	ln, err := listenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	srv = h1.Serve(ln, localAPI(&stubBackend{logoutF: logout}), h1.ServerOptions{})
	t.Cleanup(func() { srv.Close() })
	return path, srv
}

// TestLocalAPIServer talks to the server with net/http's client, as curl
// and scripts do, and with the command's own client.
func TestLocalAPIServer(t *testing.T) {
	before := runtime.NumGoroutine()
	path, srv := startAPI(t, func() error { return errors.New("control unreachable") })
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}, Timeout: 5 * time.Second}
	defer hc.CloseIdleConnections()
	for _, tc := range []struct {
		method, path string
		status       int
		body, allow  string
	}{
		{"POST", "/rebind", 204, "", ""},
		{"POST", "/rebind?x=1", 204, "", ""},
		{"GET", "/rebind", 405, "Method Not Allowed\n", "POST"},
		{"POST", "/status", 405, "Method Not Allowed\n", "GET, HEAD"},
		{"GET", "/nope", 404, "404 page not found\n", ""},
		{"POST", "/logout", 502, "control unreachable\n", ""},
		{"POST", "/ping?type=bogus", 400, "unknown ping type \"bogus\" (want disco, TSMP or ICMP)\n", ""},
	} {
		req, _ := http.NewRequest(tc.method, "http://microlink"+tc.path, nil)
		res, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", tc.method, tc.path, err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != tc.status || string(b) != tc.body || res.Header.Get("Allow") != tc.allow {
			t.Errorf("%s %s: %d %q allow %q", tc.method, tc.path, res.StatusCode, b, res.Header.Get("Allow"))
		}
	}
	c := newClient(path)
	if err := c.do("POST", "/rebind", nil); err != nil {
		t.Fatalf("client: %v", err)
	}
	if err := c.do("POST", "/logout", nil); err == nil || err.Error() != "control unreachable" {
		t.Fatalf("client error: %v", err)
	}

	// Malformed and oversized requests get 400 and 413.
	for _, tc := range []struct {
		req  string
		want string
	}{
		{"NONSENSE\r\n\r\n", "HTTP/1.1 400 "},
		{"GET /status HTTP/1.1\r\nBad Header\r\n\r\n", "HTTP/1.1 400 "},
		{"GET http://[::1/ HTTP/1.1\r\n\r\n", "HTTP/1.1 400 "},
		{"POST /rebind HTTP/1.1\r\nContent-Length: 100000\r\n\r\n", "HTTP/1.1 413 "},
		{"GET /status HTTP/1.1\r\n" + strings.Repeat("X-A: b\r\n", 300) + "\r\n", "HTTP/1.1 413 "},
	} {
		conn, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		go conn.Write([]byte(tc.req))
		got, _ := io.ReadAll(conn)
		conn.Close()
		if !strings.HasPrefix(string(got), tc.want) || !strings.Contains(string(got), "Connection: close") {
			t.Errorf("%.40q: got %.80q", tc.req, got)
		}
	}

	// An idle connection does not hold up Close.
	idle, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	time.Sleep(20 * time.Millisecond)
	start := time.Now()
	srv.Close()
	if took := time.Since(start); took > h1.CloseGrace/2 {
		t.Fatalf("Close took %v", took)
	}
	hc.CloseIdleConnections()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Fatalf("%d goroutines left after Close", n-before)
	}
}

// TestNoNetHTTP keeps net/http (and the HTTP/2 package that needs it) out
// of the binary: it costs over a megabyte.
func TestNoNetHTTP(t *testing.T) {
	goCmd := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goCmd); err != nil {
		t.Skipf("no go command: %v", err)
	}
	out, err := exec.Command(goCmd, "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, p := range strings.Fields(string(out)) {
		if p == "net/http" || p == "golang.org/x/net/http2" {
			t.Errorf("cmd/microlink depends on %s", p)
		}
	}
	if !strings.Contains(string(out), "github.com/microlink-go/microlink/internal/h2") {
		t.Fatalf("dependency list looks wrong:\n%s", out)
	}
}

func TestRebindOnHangup(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	hangups := make(chan os.Signal)
	called := make(chan struct{}, 4)
	done := make(chan struct{})
	go func() {
		defer close(done)
		rebindOnHangup(ctx, hangups, func() error { called <- struct{}{}; return nil })
	}()
	for i := 0; i < 2; i++ {
		hangups <- syscall.SIGHUP
		select {
		case <-called:
		case <-time.After(5 * time.Second):
			t.Fatalf("hangup %d: no rebind", i+1)
		}
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("rebindOnHangup did not return after cancel")
	}
	if len(called) != 0 {
		t.Fatalf("%d extra rebinds", len(called))
	}
}

func TestPrintStatus(t *testing.T) {
	st := statusJSON{
		BackendState: "Running",
		TailscaleIPs: []string{"100.64.0.2"},
		Self:         &peerStatus{HostName: "sensor-1", DNSName: "sensor-1.tail1.ts.net."},
		Peer: map[string]*peerStatus{
			"nodekey:1": {HostName: "laptop", DNSName: "laptop.tail1.ts.net.", TailscaleIPs: []string{"100.64.0.3"}, OS: "linux", Online: true, Path: "direct", CurAddr: "192.0.2.7:41641", LatencyMS: 1.5, RxBytes: 10, TxBytes: 20},
			"nodekey:2": {HostName: "phone", TailscaleIPs: []string{"100.64.0.4"}, OS: "iOS", Path: "derp", DERPRegion: 9},
		},
	}
	var b strings.Builder
	printStatus(&b, st)
	for _, want := range []string{"100.64.0.2", "sensor-1", "self", "Running",
		"laptop", "online", "direct 192.0.2.7:41641", "1.50ms", "rx 10 tx 20",
		"phone", "offline", "DERP(9)"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, b.String())
		}
	}
	if strings.Contains(b.String(), "WireGuard bytes") {
		t.Errorf("a node that carried nothing shows a traffic line:\n%s", b.String())
	}
	for _, no := range []string{"routes", "Routes", "exit node", "Exit node", "TUN"} {
		if strings.Contains(b.String(), no) {
			t.Errorf("a node without routes shows %q:\n%s", no, b.String())
		}
	}

	// Routes: advertised and approved, a peer's accepted or not, the
	// exit node in use.
	rt := st
	rt.TUNName = "microlink0"
	rt.AdvertisedRoutes = []string{"198.19.1.0/24", "198.19.2.0/24"}
	rt.Self = &peerStatus{HostName: "sensor-1", PrimaryRoutes: []string{"198.19.1.0/24"}}
	rt.Peer = map[string]*peerStatus{
		"nodekey:3": {HostName: "router", PrimaryRoutes: []string{"198.19.5.0/24"}, AcceptedRoutes: []string{"198.19.5.0/24"}},
		"nodekey:4": {HostName: "other", PrimaryRoutes: []string{"198.19.6.0/24"}},
		"nodekey:5": {HostName: "gw", TailscaleIPs: []string{"100.64.0.9"}, ExitNodeOption: true, ExitNode: true, AcceptedRoutes: []string{"0.0.0.0/0", "::/0"}},
		"nodekey:6": {HostName: "gw2", ExitNodeOption: true},
	}
	b.Reset()
	printStatus(&b, rt)
	for _, want := range []string{"TUN device: microlink0", "Routes advertised: 198.19.1.0/24, 198.19.2.0/24; approved: 198.19.1.0/24",
		"Exit node in use: gw (100.64.0.9)", "routes 198.19.5.0/24 (accepted)", "routes 198.19.6.0/24 (not accepted)",
		"exit node in use", "offers exit node"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, b.String())
		}
	}

	st.Stats.DirectPacketsIn, st.Stats.DirectBytesIn, st.Stats.DirectBytesOut = 1, 148, 96
	st.Stats.DERPBytesIn, st.Stats.DERPBytesOut = 32, 64
	b.Reset()
	printStatus(&b, st)
	if want := "WireGuard bytes: direct rx 148 tx 96, DERP rx 32 tx 64"; !strings.Contains(b.String(), want) {
		t.Errorf("status lacks %q:\n%s", want, b.String())
	}
	if strings.Contains(b.String(), "#") {
		t.Errorf("a healthy node shows warnings:\n%s", b.String())
	}

	st.BackendState, st.Error = "Starting", "control: map poll: h2: connection lost: h2: server silent for 40s, PING unanswered"
	st.Health = []string{"node key expires in 3d0h (at 2030-01-01T00:00:00Z); it will be renewed with the auth key", "Tailnet lock: key not signed"}
	b.Reset()
	printStatus(&b, st)
	for _, want := range []string{"Starting", "retrying. Last error:\n#     control: map poll: h2: connection lost", "# Health check:\n#     - node key expires in 3d0h", "#     - Tailnet lock: key not signed"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, b.String())
		}
	}
}

// TestStatusJSONNames: the stats in status --json keep their camelCase
// names.
func TestStatusJSONNames(t *testing.T) {
	var st statusJSON
	st.Stats.DERPBytesIn, st.Stats.MapUpdates, st.Stats.TCPConns = 7, 3, 1
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"Stats":{"packetsIn":0,`, `"derpBytesIn":7`, `"mapUpdates":3`, `"tcpConns":1`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("status JSON lacks %s: %s", want, b)
		}
	}
}

// stubBackend stands for the daemon in local API tests.
type stubBackend struct {
	logoutF, rebindF, upF, downF func() error
}

func call(f func() error) error {
	if f == nil {
		return nil
	}
	return f()
}

func (s *stubBackend) node() *microlink.Node { return nil }
func (s *stubBackend) up() error             { return call(s.upF) }
func (s *stubBackend) down() error           { return call(s.downF) }
func (s *stubBackend) logout() error         { return call(s.logoutF) }
func (s *stubBackend) rebind() error         { return call(s.rebindF) }

// TestUpRefusesOtherLoginServer: "up" with a --login-server other than
// the one the state directory's identity belongs to stops at once with a
// message naming both servers and the ways out, and leaves the state as
// it was.
func TestUpRefusesOtherLoginServer(t *testing.T) {
	dir := t.TempDir()
	const a, b = "http://127.0.0.1:1", "http://127.0.0.1:2"
	if _, err := microlink.New(microlink.Config{StateDir: dir, ControlURL: a}); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(filepath.Join(dir, "microlink.state"))
	code, _, stderr := runCLI("up", "--login-server", b, "--statedir", dir, "--port", "0")
	if code != 1 {
		t.Fatalf("up with another server: code %d\n%s", code, stderr)
	}
	for _, want := range []string{a, b, dir, "--fresh-identity", "--login-server " + a} {
		if !strings.Contains(stderr, want) {
			t.Errorf("message does not mention %q:\n%s", want, stderr)
		}
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "microlink.state")); !bytes.Equal(after, before) {
		t.Fatal("the state changed")
	}
}
