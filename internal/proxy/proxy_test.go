package proxy

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// testDialer resolves "echo.tailnet" and "web.tailnet" to servers on
// loopback and refuses everything else, as a node refuses unknown names.
type testDialer struct {
	echoTCP, echoUDP, web string
}

func (d *testDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, _ := net.SplitHostPort(addr)
	target := ""
	switch {
	case host == "echo.tailnet" && network == "tcp":
		target = d.echoTCP
	case host == "echo.tailnet" && network == "udp":
		target = d.echoUDP
	case host == "web.tailnet":
		target = d.web
	case host == "127.0.0.1":
		target = addr
	default:
		return nil, fmt.Errorf("dns: no such host %q", host)
	}
	_ = port
	var nd net.Dialer
	return nd.DialContext(ctx, network, target)
}

func listen(t *testing.T) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func startEcho(t *testing.T) (tcpAddr, udpAddr string) {
	ln := listen(t)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(append([]byte("echo:"), buf[:n]...), from)
		}
	}()
	return ln.Addr().String(), pc.LocalAddr().String()
}

func startWeb(t *testing.T) string {
	ln := listen(t)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s host=%s conn=%q proxyauth=%q body=%q", r.Method, r.RequestURI, r.Host, r.Header.Get("Connection"), r.Header.Get("Proxy-Authorization"), body)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func newDialer(t *testing.T) *testDialer {
	e, u := startEcho(t)
	return &testDialer{echoTCP: e, echoUDP: u, web: startWeb(t)}
}

// socksConnect performs a handshake and CONNECT on c and returns the reply code.
func socksConnect(t *testing.T, c net.Conn, user, pass string, req []byte) byte {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	if user == "" {
		c.Write([]byte{5, 1, 0})
	} else {
		c.Write([]byte{5, 2, 0, 2})
	}
	var m [2]byte
	if _, err := io.ReadFull(br, m[:]); err != nil {
		t.Fatal(err)
	}
	if user != "" {
		if m[1] != 2 {
			t.Fatalf("method %d, want 2", m[1])
		}
		c.Write(append(append(append([]byte{1, byte(len(user))}, user...), byte(len(pass))), pass...))
		var st [2]byte
		if _, err := io.ReadFull(br, st[:]); err != nil || st[1] != 0 {
			return 0xff
		}
	}
	c.Write(req)
	var rep [4]byte
	if _, err := io.ReadFull(br, rep[:]); err != nil {
		t.Fatalf("reply: %v", err)
	}
	skip := map[byte]int{1: 4 + 2, 4: 16 + 2}[rep[3]]
	io.ReadFull(br, make([]byte, skip))
	return rep[1]
}

func domainReq(cmd byte, host string, port uint16) []byte {
	b := append([]byte{5, cmd, 0, 3, byte(len(host))}, host...)
	return binary.BigEndian.AppendUint16(b, port)
}

func TestSOCKS5Connect(t *testing.T) {
	d := newDialer(t)
	before := runtime.NumGoroutine()
	s := ServeSOCKS5(listen(t), SOCKS5Config{Dial: d.dial})
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if rep := socksConnect(t, c, "", "", domainReq(1, "echo.tailnet", 7)); rep != 0 {
		t.Fatalf("reply %d", rep)
	}
	c.Write([]byte("hello"))
	got := make([]byte, 5)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "hello" {
		t.Fatalf("echo: %q %v", got, err)
	}
	// Half-close goes through: the echo server sees EOF and closes.
	c.(*net.TCPConn).CloseWrite()
	if rest, err := io.ReadAll(c); err != nil || len(rest) != 0 {
		t.Fatalf("after CloseWrite: %q %v", rest, err)
	}
	c.Close()

	for _, tc := range []struct {
		name string
		req  []byte
		want byte
	}{
		{"unknown name", domainReq(1, "nope.tailnet", 80), repHostUnreachable},
		{"BIND", domainReq(2, "echo.tailnet", 7), repCommandNotSupported},
		{"bad address type", []byte{5, 1, 0, 9, 1, 2, 3, 4, 0, 80}, repAddrNotSupported},
		{"bad name", domainReq(1, "a b", 80), repGeneralFailure},
		{"reserved byte", []byte{5, 1, 1, 1, 127, 0, 0, 1, 0, 80}, repGeneralFailure},
	} {
		c, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if rep := socksConnect(t, c, "", "", tc.req); rep != tc.want {
			t.Errorf("%s: reply %d, want %d", tc.name, rep, tc.want)
		}
		c.Close()
	}
	s.Close()
	waitGoroutines(t, before)
}

func TestSOCKS5Password(t *testing.T) {
	d := newDialer(t)
	s := ServeSOCKS5(listen(t), SOCKS5Config{Dial: d.dial, Username: "u", Password: "p4ss"})
	defer s.Close()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	if rep := socksConnect(t, dial(), "u", "p4ss", domainReq(1, "echo.tailnet", 7)); rep != 0 {
		t.Fatalf("right password: reply %d", rep)
	}
	if rep := socksConnect(t, dial(), "u", "wrong", domainReq(1, "echo.tailnet", 7)); rep != 0xff {
		t.Fatalf("wrong password accepted: %d", rep)
	}
	// A client offering no authentication gets "no acceptable methods".
	c := dial()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte{5, 1, 0})
	var m [2]byte
	if _, err := io.ReadFull(c, m[:]); err != nil || m != [2]byte{5, 0xff} {
		t.Fatalf("no-auth client: %v %v", m, err)
	}
}

func TestSOCKS5UDPAssociate(t *testing.T) {
	d := newDialer(t)
	before := runtime.NumGoroutine()
	s := ServeSOCKS5(listen(t), SOCKS5Config{Dial: d.dial})
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte{5, 1, 0})
	br := bufio.NewReader(c)
	io.ReadFull(br, make([]byte, 2))
	c.Write([]byte{5, 3, 0, 1, 0, 0, 0, 0, 0, 0})
	var rep [10]byte
	if _, err := io.ReadFull(br, rep[:]); err != nil || rep[1] != 0 || rep[3] != 1 {
		t.Fatalf("associate: %v %v", rep, err)
	}
	relayAddr := netip.AddrPortFrom(netip.AddrFrom4([4]byte(rep[4:8])), binary.BigEndian.Uint16(rep[8:]))
	uc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	uc.SetDeadline(time.Now().Add(5 * time.Second))
	dgram := append([]byte{0, 0, 0, 3, byte(len("echo.tailnet"))}, "echo.tailnet"...)
	dgram = binary.BigEndian.AppendUint16(dgram, 7)
	// Garbage and fragments are dropped; the good datagram is answered.
	uc.WriteToUDPAddrPort([]byte{1, 2}, relayAddr)
	uc.WriteToUDPAddrPort(append([]byte{0, 0, 1}, dgram[3:]...), relayAddr)
	uc.WriteToUDPAddrPort(append(dgram, "ping"...), relayAddr)
	buf := make([]byte, 2048)
	n, err := uc.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	// The answer names the target's address, then carries its payload.
	if n < 10 || buf[3] != 1 || string(buf[10:n]) != "echo:ping" {
		t.Fatalf("answer %q", buf[:n])
	}
	c.Close()
	s.Close()
	waitGoroutines(t, before)
}

func TestHTTPProxy(t *testing.T) {
	d := newDialer(t)
	before := runtime.NumGoroutine()
	s := ServeHTTP(listen(t), HTTPConfig{Dial: d.dial})
	proxyURL, _ := url.Parse("http://" + s.Addr().String())
	tr := &http.Transport{Proxy: http.ProxyURL(proxyURL)}
	hc := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	get := func(method, u, body string) (int, string) {
		req, _ := http.NewRequest(method, u, strings.NewReader(body))
		req.Header.Set("Proxy-Authorization", "Basic eDp5")
		res, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, u, err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	code, body := get("GET", "http://web.tailnet/a/b?c=d", "")
	if code != 200 || body != `GET /a/b?c=d host=web.tailnet conn="close" proxyauth="" body=""` {
		t.Errorf("GET: %d %q", code, body)
	}
	code, body = get("POST", "http://web.tailnet:8080/post", strings.Repeat("x", 100000))
	if code != 200 || !strings.HasPrefix(body, "POST /post host=web.tailnet:8080") || len(body) < 100000 {
		t.Errorf("POST: %d %.80q", code, body)
	}
	code, body = get("GET", "http://nope.tailnet/", "")
	if code != 502 || !strings.Contains(body, "no such host") {
		t.Errorf("unknown host: %d %q", code, body)
	}
	// CONNECT tunnels (here to the echo server).
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "CONNECT echo.tailnet:7 HTTP/1.1\r\nHost: echo.tailnet:7\r\n\r\nearly")
	br := bufio.NewReader(c)
	line, _ := br.ReadString('\n')
	if !strings.HasPrefix(line, "HTTP/1.1 200") {
		t.Fatalf("CONNECT: %q", line)
	}
	br.ReadString('\n')
	got := make([]byte, 5)
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "early" {
		t.Fatalf("tunnel: %q %v", got, err)
	}
	c.Close()
	// Bad requests get an error and a closed connection.
	for _, tc := range []struct{ req, want string }{
		{"GARBAGE\r\n\r\n", "HTTP/1.1 400"},
		{"GET /relative HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 400"},
		{"GET https://web.tailnet/ HTTP/1.1\r\n\r\n", "HTTP/1.1 400"},
		{"CONNECT nohostport HTTP/1.1\r\n\r\n", "HTTP/1.1 400"},
		{"CONNECT nope.tailnet:443 HTTP/1.1\r\n\r\n", "HTTP/1.1 502"},
		{"GET http://web.tailnet/ HTTP/1.1\r\nX: " + strings.Repeat("a", 70000) + "\r\n\r\n", "HTTP/1.1 431"},
		{"GET http://web.tailnet/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", "HTTP/1.1 400"},
	} {
		c, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		go c.Write([]byte(tc.req))
		b, _ := io.ReadAll(c)
		c.Close()
		if !strings.HasPrefix(string(b), tc.want) {
			t.Errorf("%.40q: got %.60q", tc.req, b)
		}
	}
	tr.CloseIdleConnections()
	s.Close()
	waitGoroutines(t, before)
}

// TestCloseEndsConnections: Close ends relays in progress.
func TestCloseEndsConnections(t *testing.T) {
	d := newDialer(t)
	s := ServeSOCKS5(listen(t), SOCKS5Config{Dial: d.dial})
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if rep := socksConnect(t, c, "", "", domainReq(1, "echo.tailnet", 7)); rep != 0 {
		t.Fatal(rep)
	}
	done := make(chan struct{})
	go func() { s.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close hangs on a relay")
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("connection still open after Close: %v", err)
	}
}

func waitGoroutines(t *testing.T, before int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Fatalf("%d goroutines left:\n%s", n-before, buf[:runtime.Stack(buf, true)])
	}
}

// FuzzSOCKS5Addr: the address parser of requests and UDP datagrams
// never panics and reads no more than it was given.
func FuzzSOCKS5Addr(f *testing.F) {
	f.Add([]byte{1, 127, 0, 0, 1, 0, 80})
	f.Add([]byte{3, 4, 'a', 'b', 'c', 'd', 1, 187})
	f.Add([]byte{4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 53})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := &byteReader{b: b}
		host, _, atyp, err := readAddr(r)
		if err == nil && (host == "" || (atyp == atypDomain && !validHost(host))) {
			t.Fatalf("accepted %q", host)
		}
	})
}

// FuzzSOCKS5Server: a whole server fed arbitrary bytes answers or closes,
// and never dials anything but what a well-formed request names.
func FuzzSOCKS5Server(f *testing.F) {
	f.Add([]byte{5, 1, 0, 5, 1, 0, 3, 4, 'e', 'c', 'h', 'o', 0, 7})
	f.Add([]byte{5, 1, 2, 1, 1, 'u', 1, 'p', 5, 3, 0, 1, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{4, 1, 0, 80, 127, 0, 0, 1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		s := &SOCKS5{cfg: SOCKS5Config{Username: "u", Password: "p", Dial: func(context.Context, string, string) (net.Conn, error) {
			return nil, errors.New("dial refused in fuzzing")
		}}}
		s.server = &server{conns: map[io.Closer]struct{}{}, logger: slog.New(slog.DiscardHandler)}
		a, c := net.Pipe()
		go io.Copy(io.Discard, a)
		go func() { a.Write(b); a.Close() }()
		done := make(chan struct{})
		go func() { s.serveConn(context.Background(), c); c.Close(); close(done) }()
		select {
		case <-done:
		case <-time.After(2 * handshakeTimeout):
			t.Fatal("server hangs")
		}
	})
}

// FuzzHTTPProxy: arbitrary request bytes get an answer or a closed
// connection, never a panic or a hang.
func FuzzHTTPProxy(f *testing.F) {
	f.Add([]byte("GET http://web.tailnet/x HTTP/1.1\r\nHost: web.tailnet\r\n\r\n"))
	f.Add([]byte("CONNECT web.tailnet:443 HTTP/1.1\r\n\r\n"))
	f.Add([]byte("POST http://a/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s := &HTTP{cfg: HTTPConfig{Dial: func(context.Context, string, string) (net.Conn, error) {
			return nil, errors.New("dial refused in fuzzing")
		}}}
		s.server = &server{conns: map[io.Closer]struct{}{}, logger: slog.New(slog.DiscardHandler)}
		a, c := net.Pipe()
		go io.Copy(io.Discard, a)
		go func() { a.Write(b); a.Close() }()
		done := make(chan struct{})
		go func() { s.serveConn(context.Background(), c); c.Close(); close(done) }()
		select {
		case <-done:
		case <-time.After(2 * handshakeTimeout):
			t.Fatal("proxy hangs")
		}
	})
}
