// Package derp implements a client for DERP (Designated Encrypted Relay for
// Packets), the TLS relay Tailscale nodes use to reach each other when no
// direct path exists, and a manager that keeps a node's connections to the
// relay regions of a DERP map.
//
// A Client is one connection to one relay server. Dial makes it; Send and
// NotePreferred may be called from any goroutine, while Recv must be called
// from a single goroutine, which also answers the server's pings. Regions
// sits on top and routes packets to the region where each peer lives.
package derp

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/microlink-go/microlink/internal/key"
)

const (
	readTimeout  = 120 * time.Second // two missed keep-alives
	writeTimeout = 5 * time.Second
)

// ErrClosed is returned by operations on a closed Client or Regions.
var ErrClosed = errors.New("derp: closed")

// ErrPacketTooBig is returned by Send for packets over MaxPacketSize.
var ErrPacketTooBig = errors.New("derp: packet too big")

// Client is a connection to one DERP server.
type Client struct {
	conn      net.Conn
	br        *bufio.Reader
	priv      key.Private
	serverKey key.NodePublic
	info      ServerInfo
	log       *slog.Logger
	ackPings  bool
	retPings  bool // Options.ReturnPings

	wmu       sync.Mutex
	wbuf      []byte    // frame being written, reused
	wdeadline time.Time // write deadline currently set on conn
	werr      error     // sticky write error
	bucket    tokenBucket

	// Read side, owned by the goroutine calling Recv.
	peeked int                 // bytes of br to discard before the next frame
	rbuf   []byte              // payload of frames larger than br's buffer
	head   [MaxProblemLen]byte // start of a frame too large to buffer
	pkt    ReceivedPacket
	rerr   error // sticky read error

	pmu   sync.Mutex
	pings map[[8]byte]chan struct{}

	closeOnce sync.Once
	done      chan struct{}
}

// newClient performs the DERP handshake on conn, whose HTTP upgrade (if
// any) is complete. knownKey is the server key learnt before the
// handshake (from the Derp-Public-Key header or the meta certificate), or
// zero. The handshake stops when ctx is done.
func newClient(ctx context.Context, conn net.Conn, br *bufio.Reader, knownKey key.NodePublic, opts Options) (*Client, error) {
	c := &Client{
		conn:     conn,
		br:       br,
		priv:     opts.PrivateKey,
		log:      logger(opts.Logger),
		ackPings: !opts.DisablePingAcks,
		retPings: opts.ReturnPings && !opts.DisablePingAcks,
		done:     make(chan struct{}),
	}
	err := withContext(ctx, conn, func() error { return c.handshake(knownKey, opts.AppName) })
	if err != nil {
		return nil, fmt.Errorf("derp: handshake: %w", err)
	}
	return c, nil
}

// withContext runs f, which does I/O on conn, so that it fails when ctx is
// done: then the error includes ctx.Err().
func withContext(ctx context.Context, conn net.Conn, f func() error) error {
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	err := f()
	if !stop() {
		// The deadline was moved into the past; f's error is a timeout.
		conn.SetDeadline(time.Time{})
		return errors.Join(ctx.Err(), err)
	}
	return err
}

func (c *Client) handshake(knownKey key.NodePublic, appName string) error {
	info := clientInfo{Version: ProtocolVersion, CanAckPings: c.ackPings, AppName: appName}
	if !knownKey.IsZero() {
		if err := c.sendClientInfo(knownKey, info); err != nil {
			return err
		}
	}
	t, p, err := readFrame(c.br, 1<<10, nil)
	if err != nil {
		return err
	}
	if t != frameServerKey {
		return fmt.Errorf("derp: got frame type %#x, want ServerKey", byte(t))
	}
	if c.serverKey, err = parseServerKey(p); err != nil {
		return err
	}
	if knownKey.IsZero() {
		if err := c.sendClientInfo(c.serverKey, info); err != nil {
			return err
		}
	} else if knownKey != c.serverKey {
		return errors.New("derp: server key differs from the one announced")
	}
	t, p, err = readFrame(c.br, nonceLen+maxFrameSize, nil)
	if err != nil {
		return err
	}
	if t != frameServerInfo {
		return fmt.Errorf("derp: got frame type %#x, want ServerInfo", byte(t))
	}
	c.info, err = openServerInfo(c.priv, c.serverKey, p)
	if err != nil {
		return err
	}
	c.bucket.set(c.info)
	return nil
}

func (c *Client) sendClientInfo(server key.NodePublic, info clientInfo) error {
	p, err := sealClientInfo(c.priv, server, info)
	if err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.writeFrameLocked(frameClientInfo, p)
}

// ServerPublicKey returns the server's public key.
func (c *Client) ServerPublicKey() key.NodePublic { return c.serverKey }

// ServerInfo returns what the server sent at the end of the handshake.
func (c *Client) ServerInfo() ServerInfo { return c.info }

// LocalAddr returns the local address of the connection.
func (c *Client) LocalAddr() net.Addr { return c.conn.LocalAddr() }

// Send relays pkt to the node whose public key is dst. It is safe for
// concurrent use and does not allocate. If the server asked for a rate
// limit and pkt is over budget, Send drops it and returns nil.
func (c *Client) Send(dst key.NodePublic, pkt []byte) error {
	if len(pkt) > MaxPacketSize {
		return ErrPacketTooBig
	}
	n := keyLen + len(pkt)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return c.werr
	}
	if !c.bucket.allow(time.Now(), frameHeaderLen+n) {
		return nil
	}
	b := appendFrameHeader(c.wbuf[:0], frameSendPacket, n)
	b = append(b, dst[:]...)
	b = append(b, pkt...)
	c.wbuf = b
	return c.writeLocked(b)
}

// NotePreferred tells the server whether it is this node's home.
func (c *Client) NotePreferred(home bool) error {
	var b [1]byte
	if home {
		b[0] = 1
	}
	return c.writeFrame(frameNotePreferred, b[:])
}

// SendPong answers a server's Ping (see Options.ReturnPings).
func (c *Client) SendPong(data [8]byte) error {
	return c.writeFrame(framePong, data[:])
}

// Ping sends a Ping frame and waits for the server's Pong, returning the
// round-trip time. Another goroutine must be calling Recv meanwhile.
func (c *Client) Ping(ctx context.Context) (time.Duration, error) {
	var data [8]byte
	rand.Read(data[:])
	ch := make(chan struct{})
	c.pmu.Lock()
	if c.pings == nil {
		c.pings = make(map[[8]byte]chan struct{})
	}
	c.pings[data] = ch
	c.pmu.Unlock()
	defer func() {
		c.pmu.Lock()
		delete(c.pings, data)
		c.pmu.Unlock()
	}()
	start := time.Now()
	if err := c.writeFrame(framePing, data[:]); err != nil {
		return 0, err
	}
	select {
	case <-ch:
		return time.Since(start), nil
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-c.done:
		return 0, ErrClosed
	}
}

// Close closes the connection. Pending and later calls fail.
func (c *Client) Close() error {
	err := ErrClosed
	c.closeOnce.Do(func() {
		close(c.done)
		err = c.conn.Close()
	})
	return err
}

// Done returns a channel that is closed when the client is closed, either
// by Close or because Recv failed.
func (c *Client) Done() <-chan struct{} { return c.done }

func (c *Client) writeFrame(t frameType, payload []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return c.werr
	}
	return c.writeFrameLocked(t, payload)
}

func (c *Client) writeFrameLocked(t frameType, payload []byte) error {
	c.wbuf = appendFrame(c.wbuf[:0], t, payload)
	return c.writeLocked(c.wbuf)
}

// writeLocked writes b with a write deadline. The deadline is moved only
// when less than writeTimeout-1s of it remains, to keep the common path
// cheap. A failed write leaves a partial frame on the wire, so it closes
// the connection.
func (c *Client) writeLocked(b []byte) error {
	now := time.Now()
	if c.wdeadline.Sub(now) < writeTimeout-time.Second {
		c.wdeadline = now.Add(writeTimeout)
		c.conn.SetWriteDeadline(c.wdeadline)
	}
	if _, err := c.conn.Write(b); err != nil {
		c.werr = fmt.Errorf("derp: write: %w", err)
		c.Close()
		return c.werr
	}
	return nil
}

// Recv returns the next message from the server. It answers the server's
// pings itself (unless Options.ReturnPings or DisablePingAcks says
// otherwise) and skips frames it does not know. Any error is final and
// closes the client. Recv must not be called concurrently with itself.
func (c *Client) Recv() (Message, error) {
	if c.rerr != nil {
		return nil, c.rerr
	}
	for {
		t, p, cut, err := c.nextFrame()
		if err != nil {
			select {
			case <-c.done:
				err = errors.Join(ErrClosed, err)
			default:
			}
			c.rerr = fmt.Errorf("derp: recv: %w", err)
			c.Close()
			return nil, c.rerr
		}
		if cut && t != frameHealth {
			continue // no other frame this large means anything
		}
		if m := c.handleFrame(t, p); m != nil {
			return m, nil
		}
	}
}

// maxBufferedFrame is the largest frame payload nextFrame reads whole: a
// RecvPacket frame of the largest packet.
const maxBufferedFrame = keyLen + MaxPacketSize

// nextFrame reads one frame. Payloads that fit in the bufio.Reader are
// returned in place and discarded on the next call. Of a frame longer
// than maxBufferedFrame, which the protocol allows up to maxFrameSize,
// only the first MaxProblemLen bytes are kept (cut is set) and the rest
// is read through, so a server cannot make the client hold a megabyte.
func (c *Client) nextFrame() (t frameType, p []byte, cut bool, err error) {
	if c.peeked > 0 {
		c.br.Discard(c.peeked)
		c.peeked = 0
	}
	c.conn.SetReadDeadline(time.Now().Add(readTimeout))
	h, err := c.br.Peek(frameHeaderLen)
	if err != nil {
		return 0, nil, false, err
	}
	t, n := parseFrameHeader(h)
	c.br.Discard(frameHeaderLen)
	switch {
	case n > maxFrameSize:
		return 0, nil, false, fmt.Errorf("%w: %d bytes", errFrameSize, n)
	case n > maxBufferedFrame:
		p = c.head[:]
		if _, err := io.ReadFull(c.br, p); err != nil {
			return 0, nil, false, noEOF(err)
		}
		if _, err := c.br.Discard(int(n) - len(p)); err != nil {
			return 0, nil, false, noEOF(err)
		}
		return t, p, true, nil
	case int(n) <= c.br.Size():
		p, err := c.br.Peek(int(n))
		if err != nil {
			return 0, nil, false, noEOF(err)
		}
		c.peeked = int(n)
		return t, p, false, nil
	}
	if uint32(cap(c.rbuf)) < n {
		c.rbuf = make([]byte, n)
	}
	p = c.rbuf[:n]
	if _, err := io.ReadFull(c.br, p); err != nil {
		return 0, nil, false, noEOF(err)
	}
	return t, p, false, nil
}

// noEOF turns EOF inside a frame into ErrUnexpectedEOF.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// handleFrame turns a frame into a Message, or handles it and returns nil.
func (c *Client) handleFrame(t frameType, p []byte) Message {
	switch t {
	case frameRecvPacket:
		if len(p) < keyLen {
			c.log.Debug("derp: short RecvPacket frame", "len", len(p))
			return nil
		}
		c.pkt.Source = key.NodePublic(p[:keyLen])
		c.pkt.Data = p[keyLen:]
		return &c.pkt
	case frameKeepAlive:
		return KeepAlive{}
	case framePing:
		if len(p) < 8 {
			return nil
		}
		switch {
		case c.retPings:
			return Ping(p[:8])
		case c.ackPings:
			// A failed write closes the client; Recv notices on its next read.
			c.writeFrame(framePong, p[:8])
		}
		return nil
	case framePong:
		if len(p) < 8 {
			return nil
		}
		c.pmu.Lock()
		if ch, ok := c.pings[[8]byte(p[:8])]; ok {
			close(ch)
			delete(c.pings, [8]byte(p[:8]))
		}
		c.pmu.Unlock()
		return nil
	case framePeerGone:
		m, err := parsePeerGone(p)
		if err != nil {
			return nil
		}
		return m
	case framePeerPresent:
		m, err := parsePeerPresent(p)
		if err != nil {
			return nil
		}
		return m
	case frameHealth:
		return Health{Problem: string(p[:min(len(p), MaxProblemLen)])}
	case frameRestarting:
		m, err := parseRestarting(p)
		if err != nil {
			return nil
		}
		return m
	case frameServerInfo:
		si, err := openServerInfo(c.priv, c.serverKey, p)
		if err != nil {
			c.log.Debug("derp: bad ServerInfo frame", "err", err)
			return nil
		}
		c.wmu.Lock()
		c.bucket.set(si)
		c.wmu.Unlock()
		return si
	}
	return nil
}

func logger(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}

// tokenBucket limits sending to the rate the server asked for.
type tokenBucket struct {
	rate, burst float64 // bytes per second and bucket size; rate 0 means no limit
	tokens      float64
	last        time.Time
}

func (b *tokenBucket) set(si ServerInfo) {
	b.rate = float64(si.TokenBucketBytesPerSecond)
	b.burst = float64(si.TokenBucketBytesBurst)
	b.tokens = b.burst
	b.last = time.Time{}
}

func (b *tokenBucket) allow(now time.Time, n int) bool {
	if b.rate <= 0 {
		return true
	}
	if !b.last.IsZero() {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	if b.tokens < float64(n) {
		return false
	}
	b.tokens -= float64(n)
	return true
}
