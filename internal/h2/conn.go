package h2

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/microlink-go/microlink/internal/hpack"
)

// Default window and header limits.
const (
	DefaultStreamWindow      = 1 << 20
	DefaultMaxHeaderListSize = 64 << 10
)

// Options configure a ClientConn. The zero value is usable.
type Options struct {
	// StreamWindow is how much of one response body the server may send
	// ahead of the reader. Zero means DefaultStreamWindow.
	StreamWindow uint32
	// ConnWindow is the same bound for all streams together. Zero means
	// four times StreamWindow.
	ConnWindow uint32
	// MaxHeaderListSize bounds a response's decoded header list. Zero
	// means DefaultMaxHeaderListSize.
	MaxHeaderListSize uint32
	// Logger receives debug logs; nil discards them.
	Logger *slog.Logger
	// ReadIdleTimeout, if positive, turns on liveness checks: when a
	// request is open and nothing has been read from the server for this
	// long, the client sends a PING, and if the server then sends nothing
	// within PingTimeout the connection is closed and its requests fail
	// with a PingTimeoutError. Zero means no checks.
	ReadIdleTimeout time.Duration
	// PingTimeout is how long to wait for the server after such a PING.
	// Zero means DefaultPingTimeout.
	PingTimeout time.Duration
}

// Request is an HTTP/2 request.
type Request struct {
	Method    string
	Scheme    string // "https" if empty
	Authority string // the :authority pseudo-header (host)
	Path      string // path and query; "/" if empty
	Header    textproto.MIMEHeader
	// Body is sent as DATA frames until EOF; nil means no body. A body
	// with a Len() int method also sets content-length.
	Body io.Reader
}

// Response is an HTTP/2 response. Trailers are discarded.
type Response struct {
	Status int
	Header textproto.MIMEHeader // canonical keys
	// Body streams the response body. The caller must close it.
	Body io.ReadCloser
}

// Errors.
var (
	// ErrNotProcessed wraps errors of requests the server has certainly
	// not processed (refused, above a GOAWAY's last stream, or never
	// sent), which may be retried on another connection.
	ErrNotProcessed = errors.New("h2: request not processed")
	// ErrClosed is the error of streams on a closed ClientConn.
	ErrClosed = errors.New("h2: connection closed")

	errBodyClosed = errors.New("h2: read on closed body")
)

// StreamError is a stream reset by the server.
type StreamError struct {
	StreamID uint32
	Code     ErrCode
}

func (e StreamError) Error() string {
	return fmt.Sprintf("h2: stream %d reset by server: %v", e.StreamID, e.Code)
}

// ClientConn is the client side of one HTTP/2 connection. It is safe for
// concurrent use. A goroutine reads frames until the connection fails or
// Close is called.
type ClientConn struct {
	conn         net.Conn
	log          *slog.Logger
	streamWindow int64
	connWindow   int64
	maxHeader    uint32

	wmu  sync.Mutex // serializes writes; taken before mu, never after
	bw   *bufio.Writer
	hbuf []byte // the header block being written
	whdr [frameHeaderLen]byte
	werr error

	mu          sync.Mutex
	streams     map[uint32]*stream
	nextID      uint32
	reserved    int   // slots held by requests about to open a stream
	maxStreams  int   // server's MAX_CONCURRENT_STREAMS
	sendWindow  int64 // connection-level send window
	initWindow  int64 // server's INITIAL_WINDOW_SIZE
	maxFrame    int   // largest DATA payload we send
	recvWindow  int64 // what the server may still send on the connection
	recvUnacked int64 // consumed but not yet returned to the server
	goAway      bool
	lastStream  uint32
	err         error         // why the connection is dead, or nil
	changed     chan struct{} // closed and replaced when waiters should look again

	closeOnce sync.Once
	done      chan struct{} // closed when the read loop has exited

	healthDone chan struct{} // closed when healthLoop has returned, if it runs

	born     time.Time    // when the connection started; the base of lastRead
	lastRead atomic.Int64 // time.Since(born) when the last frame was read
	pings    uint64       // PINGs sent, the payload of the next; guarded by wmu
}

// NewClientConn starts HTTP/2 on c: it writes the connection preface and
// settings and starts reading. On error c is left open.
func NewClientConn(c net.Conn, opts *Options) (*ClientConn, error) {
	if opts == nil {
		opts = &Options{}
	}
	sw := int64(opts.StreamWindow)
	if sw == 0 {
		sw = DefaultStreamWindow
	}
	cw := int64(opts.ConnWindow)
	if cw == 0 {
		cw = min(4*sw, maxWindow)
	}
	sw, cw = min(max(sw, defaultWindow), maxWindow), min(max(cw, defaultWindow), maxWindow)
	mh := opts.MaxHeaderListSize
	if mh == 0 {
		mh = DefaultMaxHeaderListSize
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cc := &ClientConn{
		conn:         c,
		log:          log,
		streamWindow: sw,
		connWindow:   cw,
		maxHeader:    mh,
		bw:           bufio.NewWriterSize(c, frameHeaderLen+defaultMaxFrame),
		streams:      make(map[uint32]*stream),
		nextID:       1,
		maxStreams:   defaultMaxStreams,
		sendWindow:   defaultWindow,
		initWindow:   defaultWindow,
		maxFrame:     defaultMaxFrame,
		recvWindow:   cw,
		changed:      make(chan struct{}),
		done:         make(chan struct{}),
		born:         time.Now(),
	}

	var settings []byte
	for _, s := range []setting{
		{settingEnablePush, 0},
		{settingInitialWindowSize, uint32(sw)},
		{settingMaxHeaderListSize, mh},
	} {
		settings = append(settings, byte(s.id>>8), byte(s.id), byte(s.val>>24), byte(s.val>>16), byte(s.val>>8), byte(s.val))
	}
	b := append([]byte(clientPreface), appendFrameHeader(nil, len(settings), frameSettings, 0, 0)...)
	b = append(b, settings...)
	if inc := cw - defaultWindow; inc > 0 {
		b = appendFrameHeader(b, 4, frameWindowUpdate, 0, 0)
		b = append(b, byte(inc>>24), byte(inc>>16), byte(inc>>8), byte(inc))
	}
	if _, err := c.Write(b); err != nil {
		return nil, fmt.Errorf("h2: writing preface: %w", err)
	}
	go cc.readLoop()
	if opts.ReadIdleTimeout > 0 {
		timeout := opts.PingTimeout
		if timeout <= 0 {
			timeout = DefaultPingTimeout
		}
		cc.healthDone = make(chan struct{})
		go func() {
			defer close(cc.healthDone)
			cc.healthLoop(opts.ReadIdleTimeout, timeout)
		}()
	}
	return cc, nil
}

// Done returns a channel that is closed when the connection is dead.
func (cc *ClientConn) Done() <-chan struct{} { return cc.done }

// Err returns why the connection died, or nil while it is alive.
func (cc *ClientConn) Err() error {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.err
}

// CanTakeNewRequest reports whether a new request may start on the
// connection: it is alive and the server has not sent GOAWAY.
func (cc *ClientConn) CanTakeNewRequest() bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.err == nil && !cc.goAway && cc.nextID < maxStreamID
}

// Close closes the connection, fails its streams and waits for its
// goroutines to exit.
func (cc *ClientConn) Close() error {
	cc.closeWith(ErrClosed)
	<-cc.done
	if cc.healthDone != nil {
		<-cc.healthDone
	}
	return nil
}

// closeWith marks the connection dead with err, fails every stream and
// closes the underlying connection. Connection errors are reported to the
// server with GOAWAY when a write is possible without waiting.
func (cc *ClientConn) closeWith(err error) {
	cc.closeOnce.Do(func() {
		cc.mu.Lock()
		cc.err = err
		serr := err
		if err != ErrClosed {
			serr = fmt.Errorf("h2: connection lost: %w", err)
		}
		for _, s := range cc.streams {
			cc.failStreamLocked(s, serr)
		}
		last := cc.nextID - 2
		cc.broadcastLocked()
		cc.mu.Unlock()

		var ce connError
		if errors.As(err, &ce) && cc.wmu.TryLock() {
			cc.conn.SetWriteDeadline(time.Now().Add(time.Second))
			p := []byte{byte(last >> 24), byte(last >> 16), byte(last >> 8), byte(last),
				byte(ce.code >> 24), byte(ce.code >> 16), byte(ce.code >> 8), byte(ce.code)}
			cc.putFrameLocked(frameGoAway, 0, 0, p)
			cc.wmu.Unlock()
		}
		cc.conn.Close()
	})
}

func (cc *ClientConn) broadcastLocked() {
	close(cc.changed)
	cc.changed = make(chan struct{})
}

// writeFrameLocked writes and flushes one frame; cc.wmu must be held. A
// failed write kills the connection.
func (cc *ClientConn) writeFrameLocked(typ, flags uint8, id uint32, payload []byte) error {
	err := cc.putFrameLocked(typ, flags, id, payload)
	if err != nil {
		cc.closeWith(err) // never called with cc.mu held
	}
	return err
}

// putFrameLocked writes and flushes one frame; cc.wmu must be held.
func (cc *ClientConn) putFrameLocked(typ, flags uint8, id uint32, payload []byte) error {
	if cc.werr != nil {
		return cc.werr
	}
	cc.bw.Write(appendFrameHeader(cc.whdr[:0], len(payload), typ, flags, id))
	cc.bw.Write(payload)
	if err := cc.bw.Flush(); err != nil {
		cc.werr = err
		return err
	}
	return nil
}

func (cc *ClientConn) writeFrame(typ, flags uint8, id uint32, payload []byte) error {
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	return cc.writeFrameLocked(typ, flags, id, payload)
}

func (cc *ClientConn) writeWindowUpdate(id uint32, inc int64) {
	if inc <= 0 {
		return
	}
	cc.writeFrame(frameWindowUpdate, 0, id, []byte{byte(inc >> 24), byte(inc >> 16), byte(inc >> 8), byte(inc)})
}

func (cc *ClientConn) writeRST(id uint32, code ErrCode) {
	cc.writeFrame(frameRSTStream, 0, id, []byte{byte(code >> 24), byte(code >> 16), byte(code >> 8), byte(code)})
}

// creditConnLocked returns n consumed bytes to the connection window and
// returns the increment to send, if one is due.
func (cc *ClientConn) creditConnLocked(n int64) int64 {
	cc.recvUnacked += n
	if cc.recvUnacked < cc.connWindow/2 {
		return 0
	}
	inc := cc.recvUnacked
	cc.recvUnacked = 0
	cc.recvWindow += inc
	return inc
}

// creditStreamLocked does the same for a stream's window.
func (cc *ClientConn) creditStreamLocked(s *stream, n int64) int64 {
	if s.recvDone {
		return 0
	}
	s.unacked += n
	if s.unacked < cc.streamWindow/2 {
		return 0
	}
	inc := s.unacked
	s.unacked = 0
	s.recvWindow += inc
	return inc
}

// headerField validation: no control characters that would let a value
// smuggle another field.
func validField(s string) bool {
	return !strings.ContainsAny(s, "\r\n\x00")
}

// connection-specific fields, which HTTP/2 forbids.
var hopByHop = map[string]bool{
	"connection": true, "keep-alive": true, "proxy-connection": true,
	"transfer-encoding": true, "upgrade": true, "host": true,
}

// headerFields returns req's header list, pseudo-headers first.
func headerFields(req *Request) ([]hpack.HeaderField, error) {
	scheme, path, method := req.Scheme, req.Path, req.Method
	if scheme == "" {
		scheme = "https"
	}
	if path == "" {
		path = "/"
	}
	if method == "" {
		method = "GET"
	}
	fields := []hpack.HeaderField{{Name: ":method", Value: method}, {Name: ":scheme", Value: scheme},
		{Name: ":authority", Value: req.Authority}, {Name: ":path", Value: path}}
	for k, vs := range req.Header {
		lk := strings.ToLower(k)
		if hopByHop[lk] || lk == "content-length" {
			continue
		}
		for _, v := range vs {
			fields = append(fields, hpack.HeaderField{Name: lk, Value: v})
		}
	}
	if l, ok := req.Body.(interface{ Len() int }); ok {
		fields = append(fields, hpack.HeaderField{Name: "content-length", Value: strconv.Itoa(l.Len())})
	}
	for _, f := range fields {
		if f.Name == "" || !validField(f.Name) || !validField(f.Value) || strings.ContainsAny(f.Name, " :\t") && f.Name[0] != ':' {
			return nil, fmt.Errorf("h2: invalid header field %q", f.Name)
		}
	}
	return fields, nil
}

// encodeHeadersLocked encodes fields into cc.hbuf; cc.wmu must be held.
func (cc *ClientConn) encodeHeadersLocked(fields []hpack.HeaderField) {
	cc.hbuf = cc.hbuf[:0]
	for _, f := range fields {
		cc.hbuf = hpack.AppendField(cc.hbuf, f)
	}
}

// writeHeadersLocked writes the block in cc.hbuf as HEADERS and
// CONTINUATION frames; cc.wmu must be held.
func (cc *ClientConn) writeHeadersLocked(id uint32, endStream bool, maxFrame int) error {
	block := cc.hbuf
	typ := uint8(frameHeaders)
	for first := true; first || len(block) > 0; first = false {
		n := min(len(block), maxFrame)
		var flags uint8
		if first && endStream {
			flags |= flagEndStream
		}
		if n == len(block) {
			flags |= flagEndHeaders
		}
		if err := cc.writeFrameLocked(typ, flags, id, block[:n]); err != nil {
			return err
		}
		block = block[n:]
		typ = frameContinuation
	}
	return nil
}
