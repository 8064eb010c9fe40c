package h1

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
)

// Reply is a server's complete answer to one request.
type Reply struct {
	Status int
	Header textproto.MIMEHeader
	Body   []byte
}

// Handler answers one request. ctx is canceled when the server closes.
// req.URL is the parsed request-target.
type Handler func(ctx context.Context, req *Request) Reply

// ServerOptions bound what a Server reads. Zero fields mean the defaults.
type ServerOptions struct {
	MaxRequest   int           // header and body of one request: 64 KiB
	MaxBody      int           // body: 16 KiB
	ReadTimeout  time.Duration // to read one request: 10 s
	WriteTimeout time.Duration // to write one answer: 10 s
}

// Server answers HTTP/1.1 requests on a listener, one request per
// connection, each answer sent with Connection: close. Small servers (the
// local API, the status page) need no more, and it keeps them simple.
type Server struct {
	ln     net.Listener
	handle Handler
	opts   ServerOptions
	ctx    context.Context // canceled by Close; requests run under it
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	conns  map[net.Conn]bool // true while a request is being answered
	closed bool
}

// Serve starts answering requests on ln with h until Close.
func Serve(ln net.Listener, h Handler, opts ServerOptions) *Server {
	if opts.MaxRequest <= 0 {
		opts.MaxRequest = 64 << 10
	}
	if opts.MaxBody <= 0 {
		opts.MaxBody = 16 << 10
	}
	if opts.ReadTimeout <= 0 {
		opts.ReadTimeout = 10 * time.Second
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 10 * time.Second
	}
	s := &Server{ln: ln, handle: h, opts: opts, conns: make(map[net.Conn]bool)}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.wg.Go(s.acceptLoop)
	return s
}

func (s *Server) acceptLoop() {
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

// CloseGrace is how long Close lets answers in progress finish.
const CloseGrace = time.Second

// Close stops the server: it closes the listener and the connections
// still sending a request, cancels the requests in progress, gives their
// answers a moment to go out, then closes everything and waits for the
// goroutines.
func (s *Server) Close() error {
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
	case <-time.After(CloseGrace):
		s.closeConns(true)
		<-done
	}
	return err
}

func (s *Server) closeConns(busyToo bool) {
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
func (s *Server) markBusy(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = true
	return true
}

// serveConn reads one request from c and answers it.
func (s *Server) serveConn(c net.Conn) {
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(s.opts.ReadTimeout))
	br := bufio.NewReader(io.LimitReader(c, int64(s.opts.MaxRequest)))
	req, err := ReadRequest(br, s.opts.MaxBody)
	var res Reply
	switch {
	case errors.Is(err, io.EOF):
		return // connected and left
	case errors.Is(err, ErrTooLarge):
		res = TextReply(413, "request too large")
	case err != nil:
		res = TextReply(400, "bad request")
	default:
		req.URL, err = url.ParseRequestURI(req.Target)
		if err != nil {
			res = TextReply(400, "bad request target")
		}
	}
	if !s.markBusy(c) {
		return
	}
	if req != nil && req.URL != nil {
		c.SetReadDeadline(time.Time{})
		res = s.handle(s.ctx, req)
	}
	if res.Header == nil {
		res.Header = make(textproto.MIMEHeader)
	}
	res.Header.Set("Connection", "close")
	body := res.Body
	if req != nil && req.Method == "HEAD" {
		body = nil
	}
	c.SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout))
	WriteResponse(c, res.Status, res.Header, body)
}

// TextReply is a plain-text answer, as net/http's Error writes it: msg
// and a newline.
func TextReply(status int, msg string) Reply {
	return Reply{Status: status, Header: textproto.MIMEHeader{
		"Content-Type":           {"text/plain; charset=utf-8"},
		"X-Content-Type-Options": {"nosniff"},
	}, Body: []byte(msg + "\n")}
}
