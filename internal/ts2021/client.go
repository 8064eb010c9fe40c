package ts2021

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"sync"

	"github.com/microlink-go/microlink/internal/key"
)

// LBHeader is the load-balancer hint header: the request's node key.
const LBHeader = "Ts-Lb"

// ErrClosed is returned by a closed Client.
var ErrClosed = errors.New("ts2021: client closed")

// Client sends HTTP requests to the control server over one ts2021
// connection, dialing a new one when there is none or it has died.
// It is safe for concurrent use.
//
// HTTP/2 comes from net/http (unencrypted HTTP/2 with prior knowledge over
// the Noise session), so no second HTTP/2 implementation is linked in.
type Client struct {
	dialer *Dialer
	host   string
	tr     *http.Transport

	ctx    context.Context // canceled by Close; bounds dials
	cancel context.CancelFunc

	mu     sync.Mutex
	conns  map[*Conn]struct{} // live connections, closed by Close
	closed bool
}

// NewClient returns a Client that dials with d.
func NewClient(d *Dialer) *Client {
	ctx, cancel := context.WithCancel(context.Background())
	c := &Client{
		dialer: d,
		host:   d.Host,
		ctx:    ctx,
		cancel: cancel,
		conns:  make(map[*Conn]struct{}),
	}
	c.tr = &http.Transport{
		Protocols:       new(http.Protocols),
		MaxConnsPerHost: 1,
		DialTLSContext:  c.dial,
	}
	c.tr.Protocols.SetUnencryptedHTTP2(true)
	return c
}

func (c *Client) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(c.ctx, cancel)
	defer stop()
	conn, err := c.dialer.Dial(ctx)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		conn.Close()
		return nil, ErrClosed
	}
	c.conns[conn] = struct{}{}
	conn.onClose = func() {
		c.mu.Lock()
		delete(c.conns, conn)
		c.mu.Unlock()
	}
	c.dialer.logger().Debug("ts2021 connected", "remote", conn.RemoteAddr().String())
	return conn, nil
}

// RoundTrip sends req over the current connection, dialing first if
// needed. It implements http.RoundTripper.
func (c *Client) RoundTrip(req *http.Request) (*http.Response, error) {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	return c.tr.RoundTrip(req)
}

// Do is RoundTrip, for symmetry with http.Client.
func (c *Client) Do(req *http.Request) (*http.Response, error) { return c.RoundTrip(req) }

// URL returns the request URL for path on the control server. Scheme and
// host only fill the HTTP/2 pseudo-headers.
func (c *Client) URL(path string) string { return "https://" + c.host + path }

// Post sends body as JSON to path, with the node key as load-balancer
// hint.
func (c *Client) Post(ctx context.Context, path string, nodeKey key.NodePublic, body any) (*http.Response, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, "POST", c.URL(path), bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if !nodeKey.IsZero() {
		req.Header.Add(LBHeader, nodeKey.String())
	}
	return c.RoundTrip(req)
}

// CloseConns closes the live connections; the next request dials again.
func (c *Client) CloseConns() {
	c.mu.Lock()
	conns := make([]*Conn, 0, len(c.conns))
	for conn := range c.conns {
		conns = append(conns, conn)
	}
	c.mu.Unlock()
	for _, conn := range conns {
		conn.Close()
	}
	c.tr.CloseIdleConnections()
}

// Close closes the connections and makes further requests fail.
func (c *Client) Close() error {
	c.cancel()
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.CloseConns()
	return nil
}
