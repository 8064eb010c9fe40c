package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/microlink-go/microlink"
	"github.com/microlink-go/microlink/internal/h1"
)

// The local API: HTTP over a unix socket, spoken between "microlink up" and
// the other commands.
//
//	GET  /status                      → statusJSON (tailscale's names)
//	POST /ping?target=NAME|IP&type=disco|TSMP|ICMP → pingJSON
//	GET  /whois?addr=IP[:PORT]        → whoisJSON
//	POST /netcheck                    → netcheckJSON
//	POST /up, /down                   → 204: join the tailnet again, leave it
//	POST /logout                      → 204
//	POST /rebind                      → 204

const socketName = "microlink.sock"

// socketPath picks the socket: --socket if given, else <statedir>/microlink.sock.
func socketPath(socket, statedir string) (string, error) {
	if socket != "" {
		return socket, nil
	}
	if statedir == "" {
		statedir = os.Getenv("TS_STATE_DIR")
	}
	if statedir == "" {
		return "", errors.New("no --socket or --statedir given (or TS_STATE_DIR): cannot find the running node")
	}
	return filepath.Join(statedir, socketName), nil
}

type pingJSON struct {
	Type       string  `json:"type"`
	Peer       string  `json:"peer"`
	IP         string  `json:"ip"`
	LatencyMS  float64 `json:"latencyMs"`
	Endpoint   string  `json:"endpoint,omitempty"`
	DERPRegion int     `json:"derpRegion,omitempty"`
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func parsePingType(s string) (microlink.PingType, error) {
	switch s {
	case "", "disco":
		return microlink.PingDisco, nil
	case "TSMP", "tsmp":
		return microlink.PingTSMP, nil
	case "ICMP", "icmp":
		return microlink.PingICMP, nil
	}
	return 0, fmt.Errorf("unknown ping type %q (want disco, TSMP or ICMP)", s)
}

// apiRoute is one path of the local API and the method it answers.
type apiRoute struct {
	method string
	serve  func(ctx context.Context, q url.Values) h1.Reply
}

// backend is what the local API drives: the daemon, or a stub in tests.
type backend interface {
	node() *microlink.Node
	up() error
	down() error
	logout() error
	rebind() error
}

// localAPI returns the local API of b.
func localAPI(b backend) h1.Handler {
	routes := map[string]apiRoute{
		"/status": {"GET", func(ctx context.Context, q url.Values) h1.Reply {
			return jsonResponse(statusOf(b.node()))
		}},
		"/ping": {"POST", func(ctx context.Context, q url.Values) h1.Reply {
			typ, err := parsePingType(q.Get("type"))
			if err != nil {
				return h1.TextReply(400, err.Error())
			}
			timeout := 10 * time.Second
			if s := q.Get("timeout"); s != "" {
				if d, err := time.ParseDuration(s); err == nil && d > 0 {
					timeout = d
				}
			}
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			res, err := b.node().Ping(ctx, q.Get("target"), typ)
			if err != nil {
				return h1.TextReply(502, err.Error())
			}
			pj := pingJSON{Type: res.Type.String(), Peer: res.Peer, IP: res.PeerIP.String(), LatencyMS: ms(res.Latency), DERPRegion: res.DERPRegion}
			if res.Endpoint.IsValid() {
				pj.Endpoint = res.Endpoint.String()
			}
			return jsonResponse(pj)
		}},
		"/whois": {"GET", func(ctx context.Context, q url.Values) h1.Reply {
			w, err := b.node().WhoIs(q.Get("addr"))
			if err != nil {
				return h1.TextReply(404, err.Error())
			}
			return jsonResponse(whoisOf(w))
		}},
		"/netcheck": {"POST", func(ctx context.Context, q url.Values) h1.Reply {
			ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			r, err := b.node().Netcheck(ctx)
			if err != nil {
				return h1.TextReply(502, err.Error())
			}
			return jsonResponse(netcheckOf(r))
		}},
		"/up":     {"POST", action(b.up, 500)},
		"/down":   {"POST", action(b.down, 500)},
		"/logout": {"POST", action(b.logout, 502)},
		"/rebind": {"POST", action(b.rebind, 500)},
	}
	return func(ctx context.Context, req *h1.Request) h1.Reply {
		r, ok := routes[req.URL.Path]
		if !ok {
			return h1.TextReply(404, "404 page not found")
		}
		allow := r.method
		if r.method == "GET" {
			allow = "GET, HEAD"
		}
		if req.Method != r.method && !(r.method == "GET" && req.Method == "HEAD") {
			res := h1.TextReply(405, "Method Not Allowed")
			res.Header.Set("Allow", allow)
			return res
		}
		return r.serve(ctx, req.URL.Query())
	}
}

// action is a route that runs f and answers 204, or failStatus and f's
// error.
func action(f func() error, failStatus int) func(context.Context, url.Values) h1.Reply {
	return func(context.Context, url.Values) h1.Reply {
		if err := f(); err != nil {
			return h1.TextReply(failStatus, err.Error())
		}
		return h1.Reply{Status: 204}
	}
}

func jsonResponse(v any) h1.Reply {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return h1.TextReply(500, err.Error())
	}
	return h1.Reply{Status: 200, Header: textproto.MIMEHeader{"Content-Type": {"application/json"}}, Body: append(b, '\n')}
}

// listenUnix listens on path with mode 0600, replacing a stale socket file
// but refusing to steal one a live daemon still answers on.
func listenUnix(path string) (net.Listener, error) {
	if c, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
		c.Close()
		return nil, fmt.Errorf("another microlink is already running on %s", path)
	}
	os.Remove(path)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// client talks to a running daemon.
type client struct {
	path string
}

func newClient(path string) *client { return &client{path: path} }

// do sends one request and decodes a JSON answer into out, if not nil.
func (c *client) do(method, path string, out any) error {
	conn, err := net.Dial("unix", c.path)
	if err != nil {
		var ne *net.OpError
		if errors.As(err, &ne) {
			return fmt.Errorf("no microlink running on %s (start one with 'microlink up'): %v", c.path, ne.Err)
		}
		return err
	}
	defer conn.Close()
	if err := h1.WriteRequest(conn, method, path, "microlink", textproto.MIMEHeader{"Connection": {"close"}}, nil); err != nil {
		return err
	}
	resp, err := h1.ReadResponse(bufio.NewReader(conn), method)
	if err != nil {
		return fmt.Errorf("local API: %w", err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.Status/100 != 2 {
		return errors.New(string(trimNL(body)))
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(body, out)
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// pingQuery is the query of a /ping request, its keys in the order
// url.Values.Encode sorts them (Encode itself would link a string sort).
func pingQuery(target, typ string, timeout time.Duration) string {
	q := "?target=" + url.QueryEscape(target)
	if timeout > 0 {
		q += "&timeout=" + url.QueryEscape(timeout.String())
	}
	return q + "&type=" + url.QueryEscape(typ)
}
