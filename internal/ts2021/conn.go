package ts2021

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/microlink-go/microlink/internal/noise"
	"github.com/microlink-go/microlink/internal/tailcfg"
)

// EarlyPayloadMagic starts the early payload a server may send before
// HTTP/2 begins.
const EarlyPayloadMagic = "\xff\xff\xffTS"

// maxEarlyPayload bounds the early payload's JSON.
const maxEarlyPayload = 10 << 20

// Conn is a ts2021 connection: a Noise session whose Read skips the
// server's early payload, so that what remains is the server's HTTP/2
// stream.
type Conn struct {
	*noise.Conn

	mu      sync.Mutex // guards the fields below; held by Read
	started bool
	prefix  [9]byte // first bytes to hand back when they are not the magic
	pre     []byte  // unread part of prefix
	err     error

	early atomic.Pointer[tailcfg.EarlyNoise]
}

func newConn(nc *noise.Conn) *Conn { return &Conn{Conn: nc} }

// Read reads the HTTP/2 stream from the server.
func (c *Conn) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.started {
		c.started = true
		c.err = c.readEarlyLocked()
	}
	if c.err != nil {
		return 0, c.err
	}
	if len(c.pre) > 0 {
		n := copy(p, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// readEarlyLocked consumes the early payload, if any, from the start of
// the stream.
func (c *Conn) readEarlyLocked() error {
	pre, ep, err := readEarly(c.Conn, &c.prefix)
	c.pre = pre
	if ep != nil {
		c.early.Store(ep)
	}
	return err
}

// readEarly reads the first 9 bytes of r into buf: an HTTP/2 frame header,
// or the magic and a big-endian length. With the magic, it reads and
// decodes the early payload and returns no prefix; otherwise it returns
// the 9 bytes as the prefix to hand on to HTTP/2.
func readEarly(r io.Reader, buf *[9]byte) (prefix []byte, ep *tailcfg.EarlyNoise, err error) {
	if _, err := io.ReadFull(r, buf[:]); err != nil {
		return nil, nil, err
	}
	if string(buf[:len(EarlyPayloadMagic)]) != EarlyPayloadMagic {
		return buf[:], nil, nil
	}
	n := binary.BigEndian.Uint32(buf[len(EarlyPayloadMagic):])
	if n > maxEarlyPayload {
		return nil, nil, fmt.Errorf("ts2021: early payload of %d bytes is too large", n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, nil, fmt.Errorf("ts2021: reading early payload: %w", err)
	}
	ep = new(tailcfg.EarlyNoise)
	if err := json.Unmarshal(b, ep); err != nil {
		return nil, nil, fmt.Errorf("ts2021: decoding early payload: %w", err)
	}
	return nil, ep, nil
}

// EarlyPayload returns the early payload the server sent, or nil if it
// sent none or none has been read yet (it is read by the first Read).
func (c *Conn) EarlyPayload() *tailcfg.EarlyNoise { return c.early.Load() }
