package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/textproto"
	"net/url"
	"strings"
	"time"

	"github.com/microlink-go/microlink/internal/h1"
)

// HTTPConfig configures an HTTP proxy.
type HTTPConfig struct {
	Dial   Dialer
	Logger *slog.Logger
}

// HTTP is a running HTTP proxy: CONNECT tunnels, and plain http://
// requests in absolute form, each sent upstream with Connection: close
// and its answer relayed as it comes.
type HTTP struct {
	*server
	cfg HTTPConfig
}

// ServeHTTP serves the HTTP proxy on ln until Close.
func ServeHTTP(ln net.Listener, cfg HTTPConfig) *HTTP {
	s := &HTTP{cfg: cfg}
	s.server = newServer(ln, cfg.Logger, s.serveConn)
	return s
}

// maxProxyRequest bounds a request's line and header.
const maxProxyRequest = 64 << 10

// hopByHop are the header fields that concern one connection only.
var hopByHop = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authorization", "Proxy-Authenticate", "Te", "Trailer", "Upgrade"}

func (s *HTTP) serveConn(ctx context.Context, c net.Conn) {
	c.SetReadDeadline(time.Now().Add(handshakeTimeout))
	lr := &io.LimitedReader{R: c, N: maxProxyRequest}
	br := bufio.NewReader(lr)
	req, err := h1.ReadRequestHeader(br)
	switch {
	case errors.Is(err, io.EOF):
		return
	case errors.Is(err, h1.ErrTooLarge) || (err != nil && lr.N == 0):
		s.fail(c, 431, "request header too large")
		return
	case err != nil:
		s.fail(c, 400, "malformed request")
		return
	}
	lr.N = 1 << 62 // the header is read; the body may be of any size
	c.SetReadDeadline(time.Time{})
	if req.Method == "CONNECT" {
		s.connect(ctx, c, br, req)
		return
	}
	u, err := url.Parse(req.Target)
	if err != nil || u.Host == "" || !strings.HasPrefix(req.Target, "http://") {
		s.fail(c, 400, "this is a proxy: the request target must be an absolute http:// URL, or use CONNECT")
		return
	}
	if len(req.Header.Values("Transfer-Encoding")) > 0 && len(req.Header.Values("Content-Length")) > 0 {
		s.fail(c, 400, "both Transfer-Encoding and Content-Length")
		return
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "80")
	}
	up, err := s.dial(ctx, host)
	if err != nil {
		s.logger.Debug("http proxy: dial", "target", host, "err", err)
		s.fail(c, 502, "cannot reach "+host+": "+err.Error())
		return
	}
	defer up.Close()
	var out bytes.Buffer
	path := u.EscapedPath()
	if path == "" {
		path = "/"
	}
	if u.RawQuery != "" {
		path += "?" + u.RawQuery
	}
	out.WriteString(req.Method + " " + path + " HTTP/1.1\r\n")
	h := req.Header
	for _, f := range h.Values("Connection") {
		for _, name := range strings.Split(f, ",") {
			h.Del(strings.TrimSpace(name))
		}
	}
	for _, k := range hopByHop {
		h.Del(k)
	}
	if h.Get("Host") == "" {
		h.Set("Host", u.Host)
	}
	h.Set("Connection", "close")
	for k, vs := range h {
		for _, v := range vs {
			out.WriteString(k + ": " + v + "\r\n")
		}
	}
	out.WriteString("\r\n")
	pending, _ := br.Peek(br.Buffered())
	out.Write(pending)
	if _, err := up.Write(out.Bytes()); err != nil {
		s.fail(c, 502, "upstream: "+err.Error())
		return
	}
	// The rest of the body, if any, follows as it comes; the answer runs
	// until the server closes, as asked.
	relay(c, up, nil)
}

func (s *HTTP) connect(ctx context.Context, c net.Conn, br *bufio.Reader, req *h1.Request) {
	host, port, err := net.SplitHostPort(req.Target)
	if err != nil || host == "" || port == "" {
		s.fail(c, 400, "CONNECT wants host:port")
		return
	}
	up, err := s.dial(ctx, req.Target)
	if err != nil {
		s.logger.Debug("http proxy: connect", "target", req.Target, "err", err)
		s.fail(c, 502, "cannot reach "+req.Target+": "+err.Error())
		return
	}
	defer up.Close()
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	pending, _ := br.Peek(br.Buffered())
	relay(c, up, pending)
}

func (s *HTTP) dial(ctx context.Context, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	return s.cfg.Dial(ctx, "tcp", addr)
}

func (s *HTTP) fail(c net.Conn, status int, msg string) {
	c.SetWriteDeadline(time.Now().Add(handshakeTimeout))
	h1.WriteResponse(c, status, textproto.MIMEHeader{
		"Content-Type": {"text/plain; charset=utf-8"},
		"Connection":   {"close"},
	}, []byte(msg+"\n"))
}
