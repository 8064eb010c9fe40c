// Package web serves a node's status page and Prometheus metrics over
// HTTP/1.1 (internal/h1, not net/http): GET / is a small page with the
// node, its peers, their paths, latency and traffic, refreshing itself
// every few seconds without JavaScript or any external asset; GET
// /metrics is the Prometheus text format.
//
// A listener on a non-loopback address needs a token; a token, when set,
// is asked for on every request, as "Authorization: Bearer TOKEN", as
// "?token=TOKEN" (which then sets a cookie, for the page's own
// refreshes) or as that cookie. A missing or wrong token gets 401.
package web

import (
	"context"
	"crypto/subtle"
	"errors"
	"net"
	"net/netip"
	"net/textproto"
	"strings"
	"time"

	"github.com/microlink-go/microlink"
	"github.com/microlink-go/microlink/internal/h1"
)

// Options configure the status server.
type Options struct {
	// Node returns the node to show (it may change: "down" and "up"
	// replace it).
	Node func() *microlink.Node
	// Token, if set, is required on every request.
	Token string
	// Refresh is the page's refresh interval; zero means 5 s.
	Refresh time.Duration
}

// ErrTokenRequired is returned by Listen for a non-loopback address
// without a token.
var ErrTokenRequired = errors.New("web: a non-loopback address needs a token (--web-token, or a web-token file in the state directory)")

// Listen listens on addr, refusing a non-loopback address without token.
func Listen(addr, token string) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if token == "" && !isLoopback(host) {
		return nil, ErrTokenRequired
	}
	return net.Listen("tcp", addr)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// Serve serves the status page and metrics on ln until Close.
func Serve(ln net.Listener, opts Options) *h1.Server {
	return h1.Serve(ln, Handler(opts), h1.ServerOptions{MaxBody: 1})
}

const cookieName = "microlink_token"

// Handler returns the request handler.
func Handler(opts Options) h1.Handler {
	if opts.Refresh <= 0 {
		opts.Refresh = 5 * time.Second
	}
	return func(ctx context.Context, req *h1.Request) h1.Reply {
		setCookie := false
		if opts.Token != "" {
			ok, fromQuery := authorized(req, opts.Token)
			if !ok {
				r := h1.TextReply(401, "unauthorized: this status page needs its token (?token=…)")
				r.Header.Set("WWW-Authenticate", `Bearer realm="microlink"`)
				return r
			}
			setCookie = fromQuery
		}
		if req.Method != "GET" && req.Method != "HEAD" {
			r := h1.TextReply(405, "Method Not Allowed")
			r.Header.Set("Allow", "GET, HEAD")
			return r
		}
		var r h1.Reply
		switch req.URL.Path {
		case "/":
			r = h1.Reply{Status: 200, Header: textproto.MIMEHeader{
				"Content-Type":            {"text/html; charset=utf-8"},
				"Content-Security-Policy": {"default-src 'none'; style-src 'unsafe-inline'; img-src data:"},
				"X-Frame-Options":         {"DENY"},
				"Cache-Control":           {"no-store"},
			}, Body: page(opts.Node(), opts.Refresh, time.Now())}
		case "/metrics":
			r = h1.Reply{Status: 200, Header: textproto.MIMEHeader{
				"Content-Type": {"text/plain; version=0.0.4; charset=utf-8"},
			}, Body: metrics(opts.Node(), time.Now())}
		default:
			return h1.TextReply(404, "404 page not found")
		}
		r.Header.Set("X-Content-Type-Options", "nosniff")
		if setCookie {
			r.Header.Set("Set-Cookie", cookieName+"="+opts.Token+"; Path=/; HttpOnly; SameSite=Strict")
		}
		return r
	}
}

// authorized checks the request's token; fromQuery tells that it came in
// the URL, so the answer should set the cookie.
func authorized(req *h1.Request, token string) (ok, fromQuery bool) {
	eq := func(s string) bool { return subtle.ConstantTimeCompare([]byte(s), []byte(token)) == 1 }
	if a := req.Header.Get("Authorization"); a != "" {
		return strings.HasPrefix(a, "Bearer ") && eq(strings.TrimPrefix(a, "Bearer ")), false
	}
	if q := req.URL.Query(); q.Has("token") {
		return eq(q.Get("token")), true
	}
	for _, line := range req.Header.Values("Cookie") {
		for _, c := range strings.Split(line, ";") {
			k, v, _ := strings.Cut(strings.TrimSpace(c), "=")
			if k == cookieName {
				return eq(v), false
			}
		}
	}
	return false, false
}
