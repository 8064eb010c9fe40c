package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/textproto"
	"net/url"
	"sync"
	"time"

	"github.com/microlink-go/microlink/internal/h1"
)

// Local API server limits.
const (
	apiMaxRequest   = 64 << 10 // header and body of one request
	apiMaxBody      = 16 << 10
	apiReadTimeout  = 10 * time.Second
	apiWriteTimeout = 10 * time.Second
)

// apiServer serves the local API over HTTP/1.1: one request per
// connection, answered with Connection: close.
type apiServer struct {
	ln     net.Listener
	handle apiHandler
	ctx    context.Context // canceled by Close; requests run under it
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	conns  map[net.Conn]bool // true while a request is being answered
	closed bool
}

// serveAPI starts serving h on ln until Close.
func serveAPI(ln net.Listener, h apiHandler) *apiServer {
	s := &apiServer{ln: ln, handle: h, conns: make(map[net.Conn]bool)}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.wg.Go(s.acceptLoop)
	return s
}

func (s *apiServer) acceptLoop() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = false
		s.wg.Go(func() {
			s.serveConn(c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		})
		s.mu.Unlock()
	}
}

// apiCloseGrace is how long Close lets answers in progress finish.
const apiCloseGrace = time.Second

// Close stops the server: it closes the listener and the connections
// still sending a request, cancels the requests in progress, gives their
// answers a moment to go out, then closes everything and waits for the
// goroutines.
func (s *apiServer) Close() error {
	s.cancel()
	err := s.ln.Close()
	s.closeConns(false)
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(apiCloseGrace):
		s.closeConns(true)
		<-done
	}
	return err
}

func (s *apiServer) closeConns(busyToo bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for c, busy := range s.conns {
		if busyToo || !busy {
			c.Close()
		}
	}
}

// markBusy records that c is being answered; it reports false if the
// server is closing.
func (s *apiServer) markBusy(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = true
	return true
}

// serveConn reads one request from c and answers it.
func (s *apiServer) serveConn(c net.Conn) {
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(apiReadTimeout))
	br := bufio.NewReader(io.LimitReader(c, apiMaxRequest))
	req, err := h1.ReadRequest(br, apiMaxBody)
	var res apiResponse
	var u *url.URL
	switch {
	case errors.Is(err, io.EOF):
		return // connected and left
	case errors.Is(err, h1.ErrTooLarge):
		res = errorResponse("request too large", 413)
	case err != nil:
		res = errorResponse("bad request", 400)
	default:
		u, err = url.ParseRequestURI(req.Target)
		if err != nil {
			res = errorResponse("bad request target", 400)
		}
	}
	if !s.markBusy(c) {
		return
	}
	if u != nil {
		c.SetReadDeadline(time.Time{})
		res = s.handle(s.ctx, req.Method, u)
	}
	if res.header == nil {
		res.header = make(textproto.MIMEHeader)
	}
	res.header.Set("Connection", "close")
	body := res.body
	if req != nil && req.Method == "HEAD" {
		body = nil
	}
	c.SetWriteDeadline(time.Now().Add(apiWriteTimeout))
	h1.WriteResponse(c, res.status, res.header, body)
}
