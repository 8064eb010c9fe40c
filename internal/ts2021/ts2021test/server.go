// Package ts2021test provides an in-process ts2021 control server for
// tests: it serves /key, accepts the /ts2021 upgrade with the Noise
// responder, optionally sends an early payload, and serves a caller's
// http.Handler over HTTP/2 inside the Noise session.
package ts2021test

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microlink-go/microlink/internal/key"
	"github.com/microlink-go/microlink/internal/noise"
	"github.com/microlink-go/microlink/internal/tailcfg"
)

// Options configure a Server.
type Options struct {
	// TLS serves HTTPS (self-signed) instead of plain HTTP.
	TLS bool
	// NoEarlyPayload omits the early payload.
	NoEarlyPayload bool
	// EarlyPayload overrides the early payload bytes (after the magic and
	// length are added) when non-nil.
	EarlyPayload []byte
	// UpgradeHeader overrides the Upgrade value of the 101 response.
	UpgradeHeader string
}

// Server is a test control server.
type Server struct {
	HTTP *httptest.Server
	URL  string
	Key  key.Private

	// Upgrades counts successful Noise handshakes.
	Upgrades atomic.Int32
	// LastVersion is the protocol version of the last handshake.
	LastVersion atomic.Int32
	// LastMachine is the machine key of the last handshake.
	LastMachine atomic.Pointer[key.MachinePublic]
	// KeyRequests counts /key requests; KeyQuery is the last query.
	KeyRequests atomic.Int32
	KeyQuery    atomic.Pointer[string]
	// ALPN is the negotiated protocol of the last TLS upgrade.
	ALPN atomic.Pointer[string]

	opts  Options
	inner *http.Server
	ln    *chanListener

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// NewServer starts a server whose Noise-side requests go to h. It stops
// when the test ends.
func NewServer(t testing.TB, h http.Handler, opts Options) *Server {
	s := &Server{Key: key.NewPrivate(), opts: opts, conns: make(map[net.Conn]struct{})}
	s.ln = &chanListener{ch: make(chan net.Conn), done: make(chan struct{})}
	s.inner = &http.Server{Handler: h, Protocols: new(http.Protocols)}
	s.inner.Protocols.SetUnencryptedHTTP2(true)
	go s.inner.Serve(s.ln)

	mux := http.NewServeMux()
	mux.HandleFunc("/key", s.serveKey)
	mux.HandleFunc("/ts2021", s.serveUpgrade)
	s.HTTP = httptest.NewUnstartedServer(mux)
	if opts.TLS {
		s.HTTP.EnableHTTP2 = true // the client must still not negotiate h2
		s.HTTP.StartTLS()
	} else {
		s.HTTP.Start()
	}
	s.URL = s.HTTP.URL
	t.Cleanup(s.Close)
	return s
}

// Close stops the server and closes every connection.
func (s *Server) Close() {
	s.CloseConns()
	s.HTTP.Close()
	s.ln.Close()
	s.inner.Close()
}

// CloseConns closes every upgraded connection, as a server restart would.
func (s *Server) CloseConns() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.Close()
	}
	clear(s.conns)
}

func (s *Server) serveKey(w http.ResponseWriter, r *http.Request) {
	s.KeyRequests.Add(1)
	q := r.URL.RawQuery
	s.KeyQuery.Store(&q)
	if r.URL.Query().Get("v") == "" {
		fmt.Fprintf(w, "%x", s.Key.Public()) // legacy: bare hex
		return
	}
	pub := s.Key.MachinePublic()
	json.NewEncoder(w).Encode(tailcfg.OverTLSPublicKeyResponse{PublicKey: pub})
}

func (s *Server) serveUpgrade(w http.ResponseWriter, r *http.Request) {
	if r.Method != "POST" || r.Header.Get("Upgrade") != "tailscale-control-protocol" {
		http.Error(w, "bad upgrade", http.StatusBadRequest)
		return
	}
	init, err := base64.StdEncoding.DecodeString(r.Header.Get("X-Tailscale-Handshake"))
	if err != nil {
		http.Error(w, "bad handshake header", http.StatusBadRequest)
		return
	}
	if r.TLS != nil {
		p := r.TLS.NegotiatedProtocol
		s.ALPN.Store(&p)
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	up := s.opts.UpgradeHeader
	if up == "" {
		up = "tailscale-control-protocol"
	}
	// Cork: the 101 response, the Noise response and the early payload go
	// out in one write, so the client finds Noise bytes behind the HTTP
	// response in its buffer.
	cork := &corkConn{Conn: conn}
	fmt.Fprintf(&cork.buf, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: %s\r\nConnection: upgrade\r\n\r\n", up)
	nc, err := noise.Accept(&drainConn{Conn: cork, r: brw.Reader}, s.Key, init)
	if err != nil {
		conn.Close()
		return
	}
	if !s.opts.NoEarlyPayload {
		payload := s.opts.EarlyPayload
		if payload == nil {
			payload = []byte(`{"nodeKeyChallenge":"chalpub:` + fmt.Sprintf("%x", key.NewPrivate().Public()) + `"}`)
		}
		hdr := make([]byte, 9, 9+len(payload))
		copy(hdr, "\xff\xff\xffTS")
		binary.BigEndian.PutUint32(hdr[5:], uint32(len(payload)))
		nc.Write(append(hdr, payload...))
	}
	if err := cork.uncork(); err != nil {
		conn.Close()
		return
	}
	s.Upgrades.Add(1)
	s.LastVersion.Store(int32(nc.ProtocolVersion()))
	m := nc.Peer()
	s.LastMachine.Store(&m)
	s.mu.Lock()
	s.conns[nc] = struct{}{}
	s.mu.Unlock()
	select {
	case s.ln.ch <- nc:
	case <-s.ln.done:
		nc.Close()
	}
}

// corkConn buffers writes until uncork.
type corkConn struct {
	net.Conn
	mu     sync.Mutex
	buf    bytes.Buffer
	corked bool
}

func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.corked {
		return c.buf.Write(p)
	}
	return c.Conn.Write(p)
}

func (c *corkConn) uncork() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = true
	_, err := c.Conn.Write(c.buf.Bytes())
	return err
}

// drainConn reads what the HTTP server buffered before the connection.
type drainConn struct {
	net.Conn
	r interface {
		Buffered() int
		Read([]byte) (int, error)
	}
}

func (c *drainConn) Read(p []byte) (int, error) {
	if c.r != nil && c.r.Buffered() > 0 {
		return c.r.Read(p)
	}
	return c.Conn.Read(p)
}

// chanListener hands upgraded connections to the inner HTTP/2 server.
type chanListener struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// WaitGoroutines waits up to 5 s for the goroutine count to fall to at
// most base, and fails t otherwise.
func WaitGoroutines(t testing.TB, base int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := runtimeNumGoroutine()
		if n <= base {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("goroutines: %d, want at most %d\n%s", n, base, allStacks())
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
