package web

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/microlink-go/microlink"
	"github.com/microlink-go/microlink/internal/h1"
)

func testNode(t *testing.T) *microlink.Node {
	n, err := microlink.New(microlink.Config{Hostname: "<b>x&y<i>", ControlURL: "http://127.0.0.1:1", Port: -1,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func get(t *testing.T, h h1.Handler, target string, header map[string]string) h1.Reply {
	t.Helper()
	u, err := url.ParseRequestURI(target)
	if err != nil {
		t.Fatal(err)
	}
	req := &h1.Request{Method: "GET", Target: target, URL: u, Header: map[string][]string{}}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	return h(context.Background(), req)
}

func TestPageAndMetrics(t *testing.T) {
	n := testNode(t)
	h := Handler(Options{Node: func() *microlink.Node { return n }})
	r := get(t, h, "/", nil)
	body := string(r.Body)
	if r.Status != 200 || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("page: %d %v", r.Status, r.Header)
	}
	for _, want := range []string{`<meta http-equiv="refresh" content="5">`, "&lt;b&gt;x&amp;y&lt;i&gt;", `id="peers"`, "Stopped", "default-src 'none'"} {
		if !strings.Contains(body+r.Header.Get("Content-Security-Policy"), want) {
			t.Errorf("page lacks %q", want)
		}
	}
	for _, bad := range []string{"<b>x", "<script", "src=\"http", "href=\"http"} {
		if strings.Contains(body, bad) {
			t.Errorf("page has %q", bad)
		}
	}
	r = get(t, h, "/metrics", nil)
	if r.Status != 200 || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/plain; version=0.0.4") {
		t.Fatalf("metrics: %d %v", r.Status, r.Header)
	}
	checkExposition(t, string(r.Body))
	for _, want := range []string{`microlink_state{state="Stopped"} 1`, `microlink_info{version="`, "microlink_peers 0", `microlink_path_bytes_total{path="derp",direction="in"} 0`} {
		if !strings.Contains(string(r.Body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if r := get(t, h, "/nope", nil); r.Status != 404 {
		t.Errorf("/nope: %d", r.Status)
	}
	req := &h1.Request{Method: "POST", Target: "/", URL: &url.URL{Path: "/"}, Header: map[string][]string{}}
	if r := h(context.Background(), req); r.Status != 405 {
		t.Errorf("POST: %d", r.Status)
	}
}

// checkExposition checks the text format line by line: HELP and TYPE
// before each family's samples, and well-formed samples.
func checkExposition(t *testing.T, s string) {
	t.Helper()
	sample := regexp.MustCompile(`^([a-z_]+)(\{([a-z_]+="([^"\\\n]|\\.)*",?)*\})? (-?[0-9.e+-]+|NaN|\+Inf)$`)
	typed := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSuffix(s, "\n"), "\n") {
		if f, ok := strings.CutPrefix(line, "# TYPE "); ok {
			typed[strings.Fields(f)[0]] = true
			continue
		}
		if strings.HasPrefix(line, "# HELP ") {
			continue
		}
		m := sample.FindStringSubmatch(line)
		if m == nil {
			t.Errorf("bad sample line %q", line)
			continue
		}
		if !typed[m[1]] {
			t.Errorf("sample before its TYPE: %q", line)
		}
	}
}

func TestToken(t *testing.T) {
	n := testNode(t)
	h := Handler(Options{Node: func() *microlink.Node { return n }, Token: "s3cret"})
	for _, tc := range []struct {
		target string
		header map[string]string
		status int
		cookie bool
	}{
		{"/", nil, 401, false},
		{"/metrics", nil, 401, false},
		{"/?token=wrong", nil, 401, false},
		{"/metrics", map[string]string{"Authorization": "Bearer wrong"}, 401, false},
		{"/metrics", map[string]string{"Authorization": "Basic czNjcmV0"}, 401, false},
		{"/", map[string]string{"Cookie": "microlink_token=nope"}, 401, false},
		{"/?token=s3cret", nil, 200, true},
		{"/metrics", map[string]string{"Authorization": "Bearer s3cret"}, 200, false},
		{"/", map[string]string{"Cookie": "a=b; microlink_token=s3cret"}, 200, false},
	} {
		r := get(t, h, tc.target, tc.header)
		if r.Status != tc.status || (r.Header.Get("Set-Cookie") != "") != tc.cookie {
			t.Errorf("%s %v: %d, Set-Cookie %q", tc.target, tc.header, r.Status, r.Header.Get("Set-Cookie"))
		}
		if r.Status == 401 && (strings.Contains(string(r.Body), "microlink_") || r.Header.Get("WWW-Authenticate") == "") {
			t.Errorf("%s: 401 leaks the page or lacks WWW-Authenticate", tc.target)
		}
	}
}

func TestListenNeedsTokenOffLoopback(t *testing.T) {
	if _, err := Listen("0.0.0.0:0", ""); err != ErrTokenRequired {
		t.Fatalf("0.0.0.0 without token: %v", err)
	}
	if _, err := Listen("[::]:0", ""); err != ErrTokenRequired {
		t.Fatalf(":: without token: %v", err)
	}
	for _, addr := range []string{"127.0.0.1:0", "localhost:0"} {
		ln, err := Listen(addr, "")
		if err != nil {
			t.Fatalf("%s: %v", addr, err)
		}
		ln.Close()
	}
}

// TestServe talks to a real server over loopback.
func TestServe(t *testing.T) {
	n := testNode(t)
	ln, err := Listen("127.0.0.1:0", "tok")
	if err != nil {
		t.Fatal(err)
	}
	srv := Serve(ln, Options{Node: func() *microlink.Node { return n }, Token: "tok"})
	defer srv.Close()
	for _, tc := range []struct{ req, want string }{
		{"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok\r\n\r\n", "HTTP/1.1 200 "},
		{"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 401 "},
		{"BROKEN\r\n\r\n", "HTTP/1.1 400 "},
	} {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, tc.req)
		line, _ := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if !strings.HasPrefix(line, tc.want) {
			t.Errorf("%.30q: %q", tc.req, line)
		}
	}
}

func TestEscapes(t *testing.T) {
	if got := escLabel("a\\b\"c\nd"); got != `a\\b\"c\nd` {
		t.Errorf("escLabel: %q", got)
	}
	if got := escapeHTML(`<a href="x">O'Brien & co</a>`); got != "&lt;a href=&#34;x&#34;&gt;O&#39;Brien &amp; co&lt;/a&gt;" {
		t.Errorf("escapeHTML: %q", got)
	}
}
