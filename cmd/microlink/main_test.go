package main

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
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
	for _, c := range []string{"up", "status", "ping", "logout", "version"} {
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
	defer ln.Close()
	go http.Serve(ln, http.NotFoundHandler())
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
}

func TestLocalAPIRebind(t *testing.T) {
	calls := 0
	var fail error
	h := localAPI(nil, func() error { return nil }, func() error { calls++; return fail })
	do := func(method string) int {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(method, "http://microlink/rebind", nil))
		return rec.Code
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
