// Package proxy serves the node's userspace proxies: SOCKS5 (CONNECT and
// UDP ASSOCIATE, with optional username and password) and an HTTP proxy
// (CONNECT and plain http:// requests). Both dial through a Dialer, the
// tailnet node's, so clients on the host reach tailnet addresses and
// MagicDNS names without a TUN device. Bad input gets an error reply or
// a closed connection, never more.
package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// Dialer connects to addr ("host:port") on network "tcp" or "udp".
type Dialer func(ctx context.Context, network, addr string) (net.Conn, error)

// Limits.
const (
	handshakeTimeout = 10 * time.Second // to read a request
	dialTimeout      = 30 * time.Second
	maxConns         = 256 // client connections served at once; more are closed
)

// server is the accept loop and connection bookkeeping both proxies share.
type server struct {
	ln     net.Listener
	logger *slog.Logger
	serve  func(ctx context.Context, c net.Conn)
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	conns  map[io.Closer]struct{}
	closed bool
}

func newServer(ln net.Listener, logger *slog.Logger, serve func(context.Context, net.Conn)) *server {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &server{ln: ln, logger: logger, serve: serve, conns: make(map[io.Closer]struct{})}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.wg.Go(s.acceptLoop)
	return s
}

// Addr returns the listener's address.
func (s *server) Addr() net.Addr { return s.ln.Addr() }

func (s *server) acceptLoop() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		if !s.track(c) {
			c.Close()
			continue
		}
		s.wg.Go(func() {
			defer s.untrack(c)
			defer c.Close()
			s.serve(s.ctx, c)
		})
	}
}

// track registers a closer to be closed by Close; false if the server is
// closed or full.
func (s *server) track(c io.Closer) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || len(s.conns) >= maxConns {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *server) untrack(c io.Closer) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// Close stops accepting, closes every connection and waits for their
// goroutines.
func (s *server) Close() error {
	s.cancel()
	err := s.ln.Close()
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

// relay copies both ways between a and b until both directions end,
// passing a half-close on where the connection supports it.
func relay(a, b net.Conn, aPending []byte) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		if len(aPending) > 0 {
			if _, err := b.Write(aPending); err != nil {
				return
			}
		}
		io.Copy(b, a)
		closeWrite(b)
	}()
	io.Copy(a, b)
	closeWrite(a)
	<-done
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	c.Close()
}
