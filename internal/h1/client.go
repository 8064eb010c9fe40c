package h1

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"net/url"
	"sync"
	"time"

	"github.com/microlink-go/microlink/internal/sockmark"
	"github.com/microlink-go/microlink/internal/tlsroots"
)

// Client makes one-shot HTTP/1.1 requests to http and https URLs: one
// connection per request, closed with the response body. The zero value
// is usable.
type Client struct {
	// RootCAs verifies https servers; nil means tlsroots.Pool (the
	// system roots, completed with built-in ones).
	RootCAs *x509.CertPool
	// Dial dials TCP; nil means a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Do sends a request and returns the response once its header is read.
// ctx bounds the whole exchange, reading the body included. The caller
// must close the body.
func (c *Client) Do(ctx context.Context, method, rawURL string, h textproto.MIMEHeader, body []byte) (*Response, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	port := u.Port()
	switch {
	case u.Scheme == "http" && port == "":
		port = "80"
	case u.Scheme == "https" && port == "":
		port = "443"
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("h1: unsupported URL scheme %q", u.Scheme)
	}
	if u.Hostname() == "" {
		return nil, errors.New("h1: URL has no host")
	}
	dial := c.Dial
	if dial == nil {
		dial = (&net.Dialer{Control: sockmark.Control}).DialContext
	}
	conn, err := dial(ctx, "tcp", net.JoinHostPort(u.Hostname(), port))
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	res, err := c.exchange(ctx, conn, u, method, h, body)
	if err != nil {
		stop()
		conn.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	res.Body = &connBody{r: res.Body, conn: conn, stop: stop, ctx: ctx}
	return res, nil
}

func (c *Client) exchange(ctx context.Context, conn net.Conn, u *url.URL, method string, h textproto.MIMEHeader, body []byte) (*Response, error) {
	if u.Scheme == "https" {
		roots := c.RootCAs
		if roots == nil {
			roots = tlsroots.Pool(nil)
		}
		tc := tls.Client(conn, &tls.Config{ServerName: u.Hostname(), RootCAs: roots})
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, err
		}
		conn = tc
	}
	hdr := textproto.MIMEHeader{"Connection": {"close"}}
	for k, v := range h {
		hdr[textproto.CanonicalMIMEHeaderKey(k)] = v
	}
	if err := WriteRequest(conn, method, u.RequestURI(), u.Host, hdr, body); err != nil {
		return nil, err
	}
	br := bufio.NewReader(conn)
	for {
		res, err := ReadResponse(br, method)
		if err != nil {
			return nil, err
		}
		if res.Status >= 200 || res.Status == 101 {
			return res, nil
		}
	}
}

// connBody is a response body that owns its connection.
type connBody struct {
	r    io.ReadCloser
	conn net.Conn
	stop func() bool
	ctx  context.Context
	once sync.Once
}

func (b *connBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF && b.ctx.Err() != nil {
		err = b.ctx.Err()
	}
	return n, err
}

func (b *connBody) Close() error {
	b.once.Do(func() {
		b.stop()
		b.conn.Close()
	})
	return nil
}
