package ts2021

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/textproto"
	"sync"

	"github.com/microlink-go/microlink/internal/h2"
	"github.com/microlink-go/microlink/internal/key"
)

// LBHeader is the load-balancer hint header: the request's node key.
const LBHeader = "Ts-Lb"

// ErrClosed is returned by a closed Client.
var ErrClosed = errors.New("ts2021: client closed")

// Request and Response are the HTTP/2 messages exchanged over the
// connection.
type (
	Request  = h2.Request
	Response = h2.Response
)

// Client sends HTTP/2 requests to the control server over one ts2021
// connection, dialing a new one when there is none or it has died or is
// going away. It is safe for concurrent use.
type Client struct {
	dialer *Dialer
	h2opts h2.Options
	host   string

	ctx    context.Context // canceled by Close; bounds dials
	cancel context.CancelFunc

	mu      sync.Mutex
	cur     *h2.ClientConn              // where new requests go, or nil
	dialing chan struct{}               // closed when the dial in flight ends
	conns   map[*h2.ClientConn]struct{} // every connection not yet known dead
	closed  bool
}

// NewClient returns a Client that dials with d and speaks HTTP/2 with
// opts (nil means the defaults; a nil Logger means d.Logger).
func NewClient(d *Dialer, opts *h2.Options) *Client {
	ctx, cancel := context.WithCancel(context.Background())
	var o h2.Options
	if opts != nil {
		o = *opts
	}
	if o.Logger == nil {
		o.Logger = d.Logger
	}
	return &Client{
		dialer: d,
		h2opts: o,
		host:   d.Host,
		ctx:    ctx,
		cancel: cancel,
		conns:  make(map[*h2.ClientConn]struct{}),
	}
}

// conn returns the connection for a new request, dialing one if needed.
// Only one dial runs at a time; other callers wait for it.
func (c *Client) conn(ctx context.Context) (*h2.ClientConn, error) {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, ErrClosed
		}
		if c.cur != nil && c.cur.CanTakeNewRequest() {
			cc := c.cur
			c.mu.Unlock()
			return cc, nil
		}
		c.cur = nil // an old connection finishes its streams on its own
		for cc := range c.conns {
			select {
			case <-cc.Done():
				delete(c.conns, cc)
			default:
			}
		}
		if ch := c.dialing; ch != nil {
			c.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		ch := make(chan struct{})
		c.dialing = ch
		c.mu.Unlock()

		cc, err := c.dial(ctx)
		c.mu.Lock()
		c.dialing = nil
		close(ch)
		if err == nil && c.closed {
			c.mu.Unlock()
			cc.Close()
			return nil, ErrClosed
		}
		if err == nil {
			c.cur = cc
			c.conns[cc] = struct{}{}
		}
		c.mu.Unlock()
		return cc, err
	}
}

func (c *Client) dial(ctx context.Context) (*h2.ClientConn, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(c.ctx, cancel)
	defer stop()
	conn, err := c.dialer.Dial(ctx)
	if err != nil {
		return nil, err
	}
	opts := c.h2opts
	cc, err := h2.NewClientConn(conn, &opts)
	if err != nil {
		conn.Close()
		return nil, err
	}
	c.dialer.logger().Debug("ts2021 connected", "remote", conn.RemoteAddr().String())
	return cc, nil
}

// RoundTrip sends req over the current connection, dialing first if
// needed. An empty Authority means the control server's host. A request
// the server did not process (its connection was going away or gone) is
// sent once more on a new connection if its body can be rewound.
func (c *Client) RoundTrip(ctx context.Context, req *Request) (*Response, error) {
	r := *req
	if r.Authority == "" {
		r.Authority = c.host
	}
	for attempt := 0; ; attempt++ {
		cc, err := c.conn(ctx)
		if err != nil {
			return nil, err
		}
		res, err := cc.RoundTrip(ctx, &r)
		if err == nil {
			return res, nil
		}
		if attempt > 0 || !errors.Is(err, h2.ErrNotProcessed) || !rewind(r.Body) {
			return nil, err
		}
	}
}

// rewind resets a request body to its start, reporting whether it could.
func rewind(body io.Reader) bool {
	if body == nil {
		return true
	}
	s, ok := body.(io.Seeker)
	if !ok {
		return false
	}
	_, err := s.Seek(0, io.SeekStart)
	return err == nil
}

// Post sends body as JSON to path, with each non-zero key of lb as a
// load-balancer hint.
func (c *Client) Post(ctx context.Context, path string, body any, lb ...key.NodePublic) (*Response, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	h := textproto.MIMEHeader{"Content-Type": {"application/json"}}
	for _, k := range lb {
		if !k.IsZero() {
			h.Add(LBHeader, k.String())
		}
	}
	return c.RoundTrip(ctx, &Request{Method: "POST", Path: path, Header: h, Body: bytes.NewReader(b)})
}

// CloseConns closes the live connections; the next request dials again.
func (c *Client) CloseConns() {
	c.mu.Lock()
	conns := make([]*h2.ClientConn, 0, len(c.conns))
	for cc := range c.conns {
		conns = append(conns, cc)
	}
	clear(c.conns)
	c.cur = nil
	c.mu.Unlock()
	for _, cc := range conns {
		cc.Close()
	}
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
