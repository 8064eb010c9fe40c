package h1

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"strings"
	"testing"
	"time"
)

func TestClientDo(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Method", r.Method)
		switch r.URL.Path {
		case "/chunked":
			w.Write([]byte("part1,"))
			w.(http.Flusher).Flush()
			w.Write([]byte("part2"))
		case "/teapot":
			w.WriteHeader(418)
			fmt.Fprintf(w, "short")
		default:
			fmt.Fprintf(w, "%s %s host=%s conn=%s x=%s len=%d body=%s", r.Method, r.URL.RequestURI(), r.Host,
				r.Header.Get("Connection"), r.Header.Get("X-A"), r.ContentLength, body)
		}
	})
	plain := httptest.NewServer(h)
	defer plain.Close()
	tlsSrv := httptest.NewTLSServer(h)
	defer tlsSrv.Close()
	roots := x509.NewCertPool()
	roots.AddCert(tlsSrv.Certificate())

	ctx := context.Background()
	for _, tc := range []struct {
		c   *Client
		url string
	}{{&Client{}, plain.URL}, {&Client{RootCAs: roots}, tlsSrv.URL}} {
		res, err := tc.c.Do(ctx, "POST", tc.url+"/p?q=1", textproto.MIMEHeader{"X-A": {"b"}}, []byte("hello"))
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		host := strings.TrimPrefix(strings.TrimPrefix(tc.url, "http://"), "https://")
		want := "POST /p?q=1 host=" + host + " conn=close x=b len=5 body=hello"
		if err != nil || res.Status != 200 || string(b) != want || res.Header.Get("X-Method") != "POST" {
			t.Fatalf("%s: %d %q %v", tc.url, res.Status, b, err)
		}
		res, err = tc.c.Do(ctx, "GET", tc.url+"/chunked", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, err = io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil || string(b) != "part1,part2" || res.Header.Get("Transfer-Encoding") != "chunked" && res.Header.Get("Content-Length") != "" {
			t.Fatalf("chunked: %q %v %v", b, err, res.Header)
		}
		res, err = tc.c.Do(ctx, "HEAD", tc.url+"/teapot", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ = io.ReadAll(res.Body)
		res.Body.Close()
		if res.Status != 418 || len(b) != 0 || res.Reason != "I'm a teapot" {
			t.Fatalf("HEAD: %d %q %q", res.Status, res.Reason, b)
		}
	}
	// An https server not in the roots is refused.
	if _, err := (&Client{}).Do(ctx, "GET", tlsSrv.URL, nil, nil); err == nil {
		t.Fatal("unverified certificate accepted")
	}
	if _, err := (&Client{}).Do(ctx, "GET", "ftp://x/", nil, nil); err == nil {
		t.Fatal("ftp accepted")
	}
}

// rawServer answers every connection with resp, after reading the request
// header.
func rawServer(t *testing.T, resp string, hold bool) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			br := bufio.NewReader(c)
			ReadRequest(br, 1<<20)
			c.Write([]byte(resp))
			if hold {
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				io.Copy(io.Discard, c)
			}
			c.Close()
		}
	}()
	return "http://" + ln.Addr().String()
}

func TestClientBodies(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		resp, want string
		err        bool
	}{
		{"HTTP/1.0 200 OK\r\n\r\nto the end", "to the end", false},
		{"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\nshort", "short", true},
		{"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA", "ok", false},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nTrailer: 1\r\n\r\n", "abc", false},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX", "abc", true},
	} {
		res, err := (&Client{}).Do(ctx, "GET", rawServer(t, tc.resp, false)+"/", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		if string(b) != tc.want || (err != nil) != tc.err {
			t.Errorf("%q: body %q, err %v", tc.resp, b, err)
		}
	}
	// Cancellation stops a body that never ends.
	ctx, cancel := context.WithCancel(ctx)
	res, err := (&Client{}).Do(ctx, "GET", rawServer(t, "HTTP/1.1 200 OK\r\n\r\nsome", true)+"/", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err = io.ReadAll(res.Body)
	res.Body.Close()
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("after cancel: %v", err)
	}
}

func TestReadRequest(t *testing.T) {
	for _, chunked := range []bool{false, true} {
		var body io.Reader = strings.NewReader("payload")
		if chunked {
			body = io.MultiReader(body) // unknown length: net/http chunks it
		}
		req, _ := http.NewRequest("POST", "http://x/echo?a=b", body)
		req.Header.Set("X-K", "v")
		var buf bytes.Buffer
		req.Write(&buf)
		got, err := ReadRequest(bufio.NewReader(&buf), 100)
		if err != nil {
			t.Fatal(err)
		}
		if got.Method != "POST" || got.Target != "/echo?a=b" || string(got.Body) != "payload" || got.Header.Get("X-K") != "v" {
			t.Fatalf("chunked=%v: %+v", chunked, got)
		}
	}
	for _, bad := range []string{
		"GET /\r\n\r\n",
		"GET / HTTP/2.0\r\n\r\n",
		"GET  / HTTP/1.1\r\n\r\n",
		"GET / HTTP/1.1\r\nNo-Colon\r\n\r\n",
		"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
		"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
		"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
		"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab",
		"POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n" + strings.Repeat("a", 101),
		"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
		"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
		"GET / HTTP/1.1\r\nX: " + strings.Repeat("a", 10000) + "\r\n\r\n",
		"GET / HTTP/1.1\r\n" + strings.Repeat("X: a\r\n", 200) + "\r\n",
	} {
		if r, err := ReadRequest(bufio.NewReader(strings.NewReader(bad)), 100); err == nil {
			t.Errorf("%.60q accepted: %+v", bad, r)
		}
	}
}

func TestWriteResponse(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteResponse(&buf, 404, textproto.MIMEHeader{"Content-Type": {"text/plain"}}, []byte("nope\n")); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(&buf), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	if res.Status != "404 Not Found" || string(b) != "nope\n" || res.Header.Get("Content-Type") != "text/plain" {
		t.Fatalf("%s %q %v", res.Status, b, res.Header)
	}
	if err := WriteResponse(io.Discard, 200, textproto.MIMEHeader{"X": {"a\r\nb"}}, nil); err == nil {
		t.Fatal("CRLF in a header value accepted")
	}
	if err := WriteRequest(io.Discard, "GET", "/ x", "h", nil, nil); err == nil {
		t.Fatal("space in the target accepted")
	}
}

func FuzzReadResponse(f *testing.F) {
	f.Add("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "GET")
	f.Add("HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\n\r\nrest", "GET")
	f.Add("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x\r\nabc\r\n0\r\nT: 1\r\n\r\n", "POST")
	f.Add("HTTP/1.0 204 No Content\r\n\r\n", "HEAD")
	f.Fuzz(func(t *testing.T, in, method string) {
		res, err := ReadResponse(bufio.NewReader(strings.NewReader(in)), method)
		if err != nil {
			return
		}
		io.Copy(io.Discard, io.LimitReader(res.Body, 1<<20))
	})
}

func FuzzReadRequest(f *testing.F) {
	f.Add("GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
	f.Add("POST /echo HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")
	f.Add("POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
	f.Fuzz(func(t *testing.T, in string) {
		req, err := ReadRequest(bufio.NewReader(strings.NewReader(in)), 64)
		if err == nil && len(req.Body) > 64 {
			t.Fatalf("body of %d bytes", len(req.Body))
		}
	})
}
