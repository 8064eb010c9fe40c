package h2

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// checkGoroutines fails the test if goroutines started during it are
// still running at its end.
func checkGoroutines(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<16)
			t.Errorf("%d goroutines leaked:\n%s", n-before, buf[:runtime.Stack(buf, true)])
		}
	})
}

// serve runs net/http's HTTP/2 server (the bundled golang.org/x/net/http2)
// with prior knowledge for h on loopback and returns a ClientConn to it.
func serve(t *testing.T, h http.Handler, conf *http.HTTP2Config, opts *Options) *ClientConn {
	t.Helper()
	checkGoroutines(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, Protocols: new(http.Protocols), HTTP2: conf}
	srv.Protocols.SetUnencryptedHTTP2(true)
	var wg sync.WaitGroup
	wg.Go(func() { srv.Serve(ln) })
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	cc, err := NewClientConn(c, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cc.Close()
		srv.Close()
		wg.Wait()
	})
	return cc
}

func get(path string) *Request {
	return &Request{Method: "GET", Authority: "example.com", Path: path}
}

func readAll(t *testing.T, res *Response) string {
	t.Helper()
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestRoundTrip(t *testing.T) {
	cc := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Echo", r.Header.Get("X-In"))
		w.Header().Add("Retry-After", "7")
		if r.URL.Path == "/teapot" {
			w.WriteHeader(418)
		}
		fmt.Fprintf(w, "%s %s %s host=%s len=%d body=%s", r.Method, r.URL.RequestURI(), r.Proto, r.Host, r.ContentLength, body)
	}), nil, nil)
	ctx := context.Background()

	res, err := cc.RoundTrip(ctx, get("/a?b=c"))
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, res); res.Status != 200 || got != "GET /a?b=c HTTP/2.0 host=example.com len=0 body=" {
		t.Fatalf("GET: %d %q", res.Status, got)
	}

	req := &Request{Method: "POST", Authority: "example.com", Path: "/teapot",
		Header: textproto.MIMEHeader{"X-In": {"hi"}, "Connection": {"close"}},
		Body:   strings.NewReader("hello")}
	res, err = cc.RoundTrip(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, res); res.Status != 418 || got != "POST /teapot HTTP/2.0 host=example.com len=5 body=hello" {
		t.Fatalf("POST: %d %q", res.Status, got)
	}
	if res.Header.Get("X-Echo") != "hi" || res.Header.Get("Retry-After") != "7" {
		t.Fatalf("headers %v", res.Header)
	}

	// A body without a length is sent until EOF.
	req = &Request{Method: "PUT", Authority: "example.com", Path: "/x", Body: io.MultiReader(strings.NewReader("ab"), strings.NewReader("cd"))}
	res, err = cc.RoundTrip(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, res); !strings.HasSuffix(got, "body=abcd") {
		t.Fatalf("PUT: %q", got)
	}

	if _, err := cc.RoundTrip(ctx, &Request{Path: "/", Header: textproto.MIMEHeader{"X-Bad": {"a\r\nb: c"}}}); err == nil {
		t.Fatal("header with CRLF accepted")
	}
	// The connection survives the refused request.
	res, err = cc.RoundTrip(ctx, get("/again"))
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, res)
}

func TestConcurrentStreams(t *testing.T) {
	var active, peak atomic.Int32
	cc := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := active.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
		active.Add(-1)
		io.WriteString(w, r.URL.Path)
	}), &http.HTTP2Config{MaxConcurrentStreams: 4}, nil)
	// Let the server's SETTINGS arrive.
	res, err := cc.RoundTrip(context.Background(), get("/warm"))
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, res)

	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 40 {
		wg.Go(func() {
			path := fmt.Sprintf("/%d", i)
			res, err := cc.RoundTrip(context.Background(), get(path))
			if err != nil {
				errs <- err
				return
			}
			b, err := io.ReadAll(res.Body)
			res.Body.Close()
			if err != nil || string(b) != path {
				errs <- fmt.Errorf("%s: %q %v", path, b, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if p := peak.Load(); p > 4 || p < 2 {
		t.Fatalf("peak of %d concurrent streams; server allows 4", p)
	}
}

// pattern is a deterministic body of n bytes.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>11)
	}
	return b
}

func TestLargeBodiesFlowControl(t *testing.T) {
	const size = 3<<20 + 12345
	want := pattern(size)
	cc := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "POST" {
			b, _ := io.ReadAll(r.Body)
			fmt.Fprint(w, sha256.Sum256(b))
			return
		}
		for b := want; len(b) > 0; {
			n := min(len(b), 50000)
			w.Write(b[:n])
			w.(http.Flusher).Flush()
			b = b[n:]
		}
	}), &http.HTTP2Config{MaxReceiveBufferPerStream: 1 << 16, MaxReceiveBufferPerConnection: 1 << 16}, &Options{StreamWindow: 1 << 16, ConnWindow: 1 << 17})

	res, err := cc.RoundTrip(context.Background(), get("/big"))
	if err != nil {
		t.Fatal(err)
	}
	// Reading slowly: the buffer never exceeds the stream window.
	s := res.Body.(body).s
	var got bytes.Buffer
	buf := make([]byte, 7000)
	for {
		cc.mu.Lock()
		buffered := s.bufLen
		cc.mu.Unlock()
		if buffered > 1<<16 {
			t.Fatalf("%d bytes buffered with a 64 KiB window", buffered)
		}
		n, err := res.Body.Read(buf)
		got.Write(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	res.Body.Close()
	if !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("body of %d bytes differs", got.Len())
	}

	// An upload larger than the server's windows.
	res, err = cc.RoundTrip(context.Background(), &Request{Method: "POST", Path: "/up", Body: bytes.NewReader(want)})
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, res); got != fmt.Sprint(sha256.Sum256(want)) {
		t.Fatalf("upload hash %s", got)
	}
}

func TestCancelMidStream(t *testing.T) {
	handlerDone := make(chan error, 1)
	cc := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for {
			if _, err := w.Write(make([]byte, 1000)); err != nil {
				handlerDone <- err
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				handlerDone <- r.Context().Err()
				return
			case <-time.After(time.Millisecond):
			}
		}
	}), nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	res, err := cc.RoundTrip(ctx, get("/stream"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(res.Body, make([]byte, 5000)); err != nil {
		t.Fatal(err)
	}
	cancel()
	_, err = io.Copy(io.Discard, res.Body)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("read after cancel: %v", err)
	}
	res.Body.Close()
	select {
	case <-handlerDone:
	case <-time.After(5 * time.Second):
		t.Fatal("server did not see the reset")
	}
	// Canceled while waiting for headers.
	ctx, cancel = context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	blocked := make(chan struct{})
	cc2 := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
		close(blocked)
	}), nil, nil)
	if _, err := cc2.RoundTrip(ctx, get("/slow")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("RoundTrip: %v", err)
	}
	<-blocked
	// The connection is still usable.
	res, err = cc.RoundTrip(context.Background(), get("/x"))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	cc.mu.Lock()
	n := len(cc.streams)
	cc.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d streams left open", n)
	}
}

func TestTrailersIgnored(t *testing.T) {
	cc := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Sum")
		io.WriteString(w, "data")
		w.Header().Set("X-Sum", "1")
	}), nil, nil)
	res, err := cc.RoundTrip(context.Background(), get("/"))
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, res); got != "data" {
		t.Fatalf("body %q", got)
	}
}

func TestServerGone(t *testing.T) {
	checkGoroutines(t)
	a, b := net.Pipe()
	go io.Copy(io.Discard, b)
	cc, err := NewClientConn(a, nil)
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	select {
	case <-cc.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed")
	}
	if _, err := cc.RoundTrip(context.Background(), get("/")); !errors.Is(err, ErrNotProcessed) {
		t.Fatalf("RoundTrip on dead conn: %v", err)
	}
	cc.Close()
}
