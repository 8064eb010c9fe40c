package ts2021_test

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microlink-go/microlink/internal/h1"
	"github.com/microlink-go/microlink/internal/key"
	"github.com/microlink-go/microlink/internal/ts2021"
	"github.com/microlink-go/microlink/internal/ts2021/ts2021test"
)

func TestPorts(t *testing.T) {
	for _, tc := range []struct{ url, http, https string }{
		{"https://controlplane.example.com", "80", "443"},
		{"https://controlplane.example.com:8443", "", "8443"},
		{"http://controlplane.example.com:8080", "8080", "443"},
		{"http://127.0.0.1:8080", "8080", ""},
		{"http://10.1.2.3:8080", "8080", ""},
		{"http://localhost:8080", "8080", ""},
		{"http://[::1]:9", "9", ""},
		{"http://192.168.1.1", "80", ""},
		{"http://example.com", "80", "443"},
	} {
		u, _ := url.Parse(tc.url)
		hp, hsp, err := ts2021.Ports(u)
		if err != nil || hp != tc.http || hsp != tc.https {
			t.Errorf("Ports(%s) = %q, %q, %v; want %q, %q", tc.url, hp, hsp, err, tc.http, tc.https)
		}
	}
	for _, bad := range []string{"ftp://x", "https://"} {
		u, _ := url.Parse(bad)
		if _, _, err := ts2021.Ports(u); err == nil {
			t.Errorf("Ports(%s) accepted", bad)
		}
	}
}

func echoHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s proto=%s lb=%s ct=%s body=%s", r.Method, r.URL.Path, r.Proto,
			r.Header.Get("Ts-Lb"), r.Header.Get("Content-Type"), body)
	})
}

func newClient(t *testing.T, srv *ts2021test.Server, version uint16) *ts2021.Client {
	t.Helper()
	hc := &h1.Client{}
	if cert := srv.HTTP.Certificate(); cert != nil {
		hc.RootCAs = x509.NewCertPool()
		hc.RootCAs.AddCert(cert)
	}
	pub, err := ts2021.FetchServerKey(context.Background(), hc, srv.URL, int(version))
	if err != nil {
		t.Fatal(err)
	}
	d, err := ts2021.NewDialer(srv.URL, key.NewPrivate(), pub, version)
	if err != nil {
		t.Fatal(err)
	}
	c := ts2021.NewClient(d, nil)
	t.Cleanup(func() { c.Close() })
	return c
}

func TestFetchServerKey(t *testing.T) {
	srv := ts2021test.NewServer(t, echoHandler(), ts2021test.Options{})
	k, err := ts2021.FetchServerKey(context.Background(), nil, srv.URL, 115)
	if err != nil || k != srv.Key.MachinePublic() {
		t.Fatalf("key %v, %v", k, err)
	}
	if q := *srv.KeyQuery.Load(); q != "v=115" {
		t.Fatalf("query %q", q)
	}
	for _, tc := range []struct {
		body   string
		status int
		want   error
	}{
		{strings.Repeat("ab", 32), 200, ts2021.ErrServerTooOld},
		{`{"legacyPublicKey":"mkey:` + strings.Repeat("0", 64) + `"}`, 200, ts2021.ErrServerTooOld},
		{`{"publicKey":"nodekey:` + strings.Repeat("0", 64) + `"}`, 200, nil},
		{"oops", 500, nil},
	} {
		hs := http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(tc.status)
			io.WriteString(w, tc.body)
		})}
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		go hs.Serve(ln)
		_, err := ts2021.FetchServerKey(context.Background(), nil, "http://"+ln.Addr().String(), 115)
		hs.Close()
		if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("body %q: err %v, want %v", tc.body, err, tc.want)
		}
	}
}

func TestRequestsOverNoise(t *testing.T) {
	for _, opts := range []ts2021test.Options{{}, {NoEarlyPayload: true}, {TLS: true}} {
		t.Run(fmt.Sprintf("%+v", opts), func(t *testing.T) {
			srv := ts2021test.NewServer(t, echoHandler(), opts)
			c := newClient(t, srv, 115)
			nk := key.NewPrivate().NodePublic()
			res, err := c.Post(context.Background(), "/machine/echo", map[string]int{"a": 1}, nk)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			want := fmt.Sprintf(`POST /machine/echo proto=HTTP/2.0 lb=%s ct=application/json body={"a":1}`, nk)
			if string(body) != want {
				t.Fatalf("got  %s\nwant %s", body, want)
			}
			if v := srv.LastVersion.Load(); v != 115 {
				t.Fatalf("noise version %d", v)
			}
			if opts.TLS {
				if p := srv.ALPN.Load(); p == nil || *p != "" {
					t.Fatalf("TLS negotiated %v", p)
				}
			}
		})
	}
}

func TestEarlyPayloadTooLarge(t *testing.T) {
	srv := ts2021test.NewServer(t, echoHandler(), ts2021test.Options{EarlyPayload: make([]byte, 10<<20+1)})
	c := newClient(t, srv, 115)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Post(ctx, "/x", nil); err == nil {
		t.Fatal("request succeeded")
	}
}

func TestMultiplexAndRedial(t *testing.T) {
	srv := ts2021test.NewServer(t, echoHandler(), ts2021test.Options{})
	c := newClient(t, srv, 115)
	do := func() error {
		res, err := c.Post(context.Background(), "/m", "x")
		if err != nil {
			return err
		}
		defer res.Body.Close()
		_, err = io.ReadAll(res.Body)
		return err
	}
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			if err := do(); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := srv.Upgrades.Load(); n != 1 {
		t.Fatalf("%d connections for concurrent requests, want 1", n)
	}
	srv.CloseConns()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := do()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no redial: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := srv.Upgrades.Load(); n != 2 {
		t.Fatalf("%d connections after redial, want 2", n)
	}
}

func TestWrongServerKey(t *testing.T) {
	srv := ts2021test.NewServer(t, echoHandler(), ts2021test.Options{})
	d, _ := ts2021.NewDialer(srv.URL, key.NewPrivate(), key.NewPrivate().MachinePublic(), 115)
	if _, err := d.Dial(context.Background()); err == nil {
		t.Fatal("dial succeeded with the wrong server key")
	}
}

func TestBadUpgradeResponse(t *testing.T) {
	srv := ts2021test.NewServer(t, echoHandler(), ts2021test.Options{UpgradeHeader: "websocket"})
	d, _ := ts2021.NewDialer(srv.URL, key.NewPrivate(), srv.Key.MachinePublic(), 115)
	if _, err := d.Dial(context.Background()); err == nil || !strings.Contains(err.Error(), "unexpected protocol") {
		t.Fatalf("err = %v", err)
	}
	// A plain HTTP server that refuses the upgrade.
	hs := http.Server{Handler: http.NotFoundHandler()}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go hs.Serve(ln)
	defer hs.Close()
	d, _ = ts2021.NewDialer("http://"+ln.Addr().String(), key.NewPrivate(), srv.Key.MachinePublic(), 115)
	if _, err := d.Dial(context.Background()); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("err = %v", err)
	}
}

// TestFallbackToHTTPS checks the port race: a silent HTTP port loses to
// HTTPS after the fallback delay, and a refused HTTP port starts HTTPS at
// once.
func TestFallbackToHTTPS(t *testing.T) {
	srv := ts2021test.NewServer(t, echoHandler(), ts2021test.Options{TLS: true})
	u, _ := url.Parse(srv.URL)

	silent, _ := net.Listen("tcp", "127.0.0.1:0")
	defer silent.Close()
	refused, _ := net.Listen("tcp", "127.0.0.1:0")
	refused.Close()

	for _, tc := range []struct {
		name     string
		httpPort string
		delay    time.Duration
		min, max time.Duration
	}{
		{"silent", port(silent.Addr()), 200 * time.Millisecond, 200 * time.Millisecond, 3 * time.Second},
		{"refused", port(refused.Addr()), 10 * time.Second, 0, 3 * time.Second},
	} {
		d := &ts2021.Dialer{
			Host: "127.0.0.1", HTTPPort: tc.httpPort, HTTPSPort: u.Port(),
			MachineKey: key.NewPrivate(), ServerKey: srv.Key.MachinePublic(), ProtocolVersion: 115,
			FallbackDelay: tc.delay,
		}
		start := time.Now()
		c, err := d.Dial(context.Background())
		took := time.Since(start)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		c.Close()
		if took < tc.min || took > tc.max {
			t.Errorf("%s: took %v, want [%v, %v]", tc.name, took, tc.min, tc.max)
		}
	}
}

func port(a net.Addr) string { return fmt.Sprint(a.(*net.TCPAddr).Port) }

func TestDialTimeout(t *testing.T) {
	silent, _ := net.Listen("tcp", "127.0.0.1:0")
	defer silent.Close()
	d := &ts2021.Dialer{Host: "127.0.0.1", HTTPPort: port(silent.Addr()),
		MachineKey: key.NewPrivate(), ServerKey: key.NewPrivate().MachinePublic(), DialTimeout: 200 * time.Millisecond}
	start := time.Now()
	if _, err := d.Dial(context.Background()); err == nil {
		t.Fatal("dial succeeded")
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("took %v", took)
	}
}

func TestCloseLeavesNoGoroutines(t *testing.T) {
	srv := ts2021test.NewServer(t, echoHandler(), ts2021test.Options{})
	c := newClient(t, srv, 115)
	time.Sleep(50 * time.Millisecond) // let the /key connection settle
	base := runtime.NumGoroutine()
	res, err := c.Post(context.Background(), "/x", nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	c.Close()
	if _, err := c.Post(context.Background(), "/x", nil); !errors.Is(err, ts2021.ErrClosed) {
		t.Fatalf("post after close: %v", err)
	}
	ts2021test.WaitGoroutines(t, base)
}
