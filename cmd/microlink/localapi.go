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
//	GET  /status                      → statusJSON
//	POST /ping?target=NAME|IP&type=disco|TSMP|ICMP → pingJSON
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

type statusJSON struct {
	State   string `json:"state"`
	AuthURL string `json:"authURL,omitempty"`
	// Error is the last control error while the node retries.
	Error string `json:"error,omitempty"`
	// Health lists control's health messages and the node key's expiry
	// warning.
	Health []string        `json:"health,omitempty"`
	Self   selfJSON        `json:"self"`
	Peers  []peerJSON      `json:"peers"`
	Stats  microlink.Stats `json:"stats"`
}

type selfJSON struct {
	Name      string   `json:"name"`
	Addresses []string `json:"addresses"`
	NodeKey   string   `json:"nodeKey,omitempty"`
	KeyExpiry string   `json:"keyExpiry,omitempty"` // RFC 3339, control's clock; absent: never or unknown
}

type peerJSON struct {
	Name       string   `json:"name"`
	FQDN       string   `json:"fqdn,omitempty"`
	Addresses  []string `json:"addresses"`
	OS         string   `json:"os,omitempty"`
	Online     bool     `json:"online"`
	Expired    bool     `json:"expired,omitempty"`
	Path       string   `json:"path,omitempty"`
	Endpoint   string   `json:"endpoint,omitempty"`
	DERPRegion int      `json:"derpRegion,omitempty"`
	LatencyMS  float64  `json:"latencyMs,omitempty"`
	RxBytes    uint64   `json:"rxBytes"`
	TxBytes    uint64   `json:"txBytes"`
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

func statusOf(n *microlink.Node) statusJSON {
	st := n.Status()
	out := statusJSON{State: st.State.String(), AuthURL: st.AuthURL, Health: st.Health, Stats: n.Stats()}
	if st.Err != nil {
		out.Error = st.Err.Error()
	}
	out.Self.Name = st.Hostname
	out.Self.NodeKey = st.NodeKey
	if !st.KeyExpiry.IsZero() {
		out.Self.KeyExpiry = st.KeyExpiry.UTC().Format(time.RFC3339)
	}
	for _, a := range st.Addresses {
		out.Self.Addresses = append(out.Self.Addresses, a.String())
	}
	for _, p := range n.Peers() {
		pj := peerJSON{Name: p.Name, FQDN: p.FQDN, OS: p.OS, Online: p.Online, Expired: p.Expired,
			Path: p.Path, DERPRegion: p.DERPRegion, LatencyMS: ms(p.Latency), RxBytes: p.RxBytes, TxBytes: p.TxBytes}
		if p.Endpoint.IsValid() {
			pj.Endpoint = p.Endpoint.String()
		}
		for _, a := range p.Addresses {
			pj.Addresses = append(pj.Addresses, a.String())
		}
		out.Peers = append(out.Peers, pj)
	}
	return out
}

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

// localAPI returns the local API for node n. logout and rebind do the
// work of POST /logout and POST /rebind.
func localAPI(n *microlink.Node, logout, rebind func() error) h1.Handler {
	routes := map[string]apiRoute{
		"/status": {"GET", func(ctx context.Context, q url.Values) h1.Reply {
			return jsonResponse(statusOf(n))
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
			res, err := n.Ping(ctx, q.Get("target"), typ)
			if err != nil {
				return h1.TextReply(502, err.Error())
			}
			pj := pingJSON{Type: res.Type.String(), Peer: res.Peer, IP: res.PeerIP.String(), LatencyMS: ms(res.Latency), DERPRegion: res.DERPRegion}
			if res.Endpoint.IsValid() {
				pj.Endpoint = res.Endpoint.String()
			}
			return jsonResponse(pj)
		}},
		"/logout": {"POST", func(ctx context.Context, q url.Values) h1.Reply {
			if err := logout(); err != nil {
				return h1.TextReply(502, err.Error())
			}
			return h1.Reply{Status: 204}
		}},
		"/rebind": {"POST", func(ctx context.Context, q url.Values) h1.Reply {
			if err := rebind(); err != nil {
				return h1.TextReply(500, err.Error())
			}
			return h1.Reply{Status: 204}
		}},
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

func pingQuery(target, typ string, timeout time.Duration) string {
	q := url.Values{"target": {target}, "type": {typ}}
	if timeout > 0 {
		q.Set("timeout", timeout.String())
	}
	return "?" + q.Encode()
}
