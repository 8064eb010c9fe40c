package noise

import (
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/microlink-go/microlink/internal/key"
)

// Record sizes.
const (
	// MaxRecordSize is the largest record on the wire, header included.
	MaxRecordSize = 4096
	// MaxCiphertextSize is the largest ciphertext of one record.
	MaxCiphertextSize = MaxRecordSize - headerLen
	// MaxPlaintextSize is the largest plaintext of one record.
	MaxPlaintextSize = MaxCiphertextSize - chacha20poly1305.Overhead
)

// Errors that make a connection unusable.
var (
	ErrCipherExhausted = errors.New("noise: nonce counter exhausted")
	ErrBadRecord       = errors.New("noise: record failed authentication")
)

// invalidNonce is the counter value that may never be used.
const invalidNonce = ^uint64(0)

// Conn is an established Noise session over a net.Conn. One goroutine may
// Read while another Writes; Close may be called at any time.
type Conn struct {
	conn    net.Conn
	version uint16
	peer    key.MachinePublic
	hash    [32]byte
	closed  atomic.Bool

	rx struct {
		sync.Mutex
		aead  cipher.AEAD
		ctr   uint64
		nonce [chacha20poly1305.NonceSize]byte
		err   error // sticky: the session is dead
		buf   [MaxRecordSize]byte
		n     int // bytes of buf filled from conn
		next  int // offset of the first undecrypted byte in buf
		pt    []byte
	}
	tx struct {
		sync.Mutex
		aead    cipher.AEAD
		ctr     uint64
		nonce   [chacha20poly1305.NonceSize]byte
		err     error
		buf     [MaxRecordSize]byte
		pending []byte // unwritten tail of a record cut short by a timeout
	}
}

func newConn(c net.Conn, version uint16, peer key.MachinePublic, h [32]byte, send, recv cipher.AEAD) *Conn {
	nc := &Conn{conn: c, version: version, peer: peer, hash: h}
	nc.tx.aead = send
	nc.rx.aead = recv
	return nc
}

// ProtocolVersion returns the version announced in the initiation message.
func (c *Conn) ProtocolVersion() uint16 { return c.version }

// Peer returns the peer's static public key: the server key for a client,
// the client's machine key for a server.
func (c *Conn) Peer() key.MachinePublic { return c.peer }

// HandshakeHash returns the final handshake hash, which is the same on both
// ends of a session.
func (c *Conn) HandshakeHash() [32]byte { return c.hash }

// setNonce writes counter ctr into the nonce: 4 zero bytes then big-endian.
func setNonce(n *[chacha20poly1305.NonceSize]byte, ctr uint64) {
	binary.BigEndian.PutUint64(n[4:], ctr)
}

// Read reads decrypted bytes.
func (c *Conn) Read(p []byte) (int, error) {
	c.rx.Lock()
	defer c.rx.Unlock()
	if c.closed.Load() {
		return 0, net.ErrClosed
	}
	if len(p) == 0 {
		return 0, nil
	}
	for len(c.rx.pt) == 0 {
		if c.rx.err != nil {
			return 0, c.rx.err
		}
		if err := c.readRecordLocked(); err != nil {
			return 0, err
		}
	}
	n := copy(p, c.rx.pt)
	c.rx.pt = c.rx.pt[n:]
	return n, nil
}

// readRecordLocked decrypts the next record into c.rx.pt, reading from the
// underlying connection as needed. Protocol errors are sticky; I/O errors
// such as deadlines are not, since no input was consumed.
func (c *Conn) readRecordLocked() error {
	r := &c.rx
	for {
		avail := r.buf[r.next:r.n]
		if len(avail) >= headerLen {
			if avail[0] != msgTypeRecord {
				r.err = fmt.Errorf("noise: unexpected record type %d", avail[0])
				return r.err
			}
			size := int(binary.BigEndian.Uint16(avail[1:3]))
			if size > MaxCiphertextSize {
				r.err = fmt.Errorf("noise: record of %d bytes exceeds maximum", size)
				return r.err
			}
			if size < chacha20poly1305.Overhead {
				r.err = ErrBadRecord
				return r.err
			}
			if len(avail) >= headerLen+size {
				return c.openLocked(avail[headerLen : headerLen+size])
			}
		}
		// Need more input: move the partial record to the front and read.
		if r.next > 0 {
			r.n = copy(r.buf[:], avail)
			r.next = 0
		}
		n, err := c.conn.Read(r.buf[r.n:])
		r.n += n
		if n > 0 {
			continue
		}
		if err == nil {
			continue
		}
		if err == io.EOF && r.n > r.next {
			err = io.ErrUnexpectedEOF
		}
		if !isTimeout(err) {
			r.err = err
		}
		return err
	}
}

func (c *Conn) openLocked(ct []byte) error {
	r := &c.rx
	if r.ctr == invalidNonce {
		r.err = ErrCipherExhausted
		return r.err
	}
	setNonce(&r.nonce, r.ctr)
	r.ctr++
	pt, err := r.aead.Open(ct[:0], r.nonce[:], ct, nil)
	if err != nil {
		r.err = ErrBadRecord
		return r.err
	}
	r.next += headerLen + len(ct)
	r.pt = pt
	return nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Write encrypts p into as many records as needed and writes them.
//
// A write that times out before any byte of a record reached the
// connection is undone; a record cut short by a timeout is completed by the
// next Write, and its plaintext is counted as written. Other write errors
// leave the session unusable for writing, since the two ends could no
// longer agree on the record counter.
func (c *Conn) Write(p []byte) (int, error) {
	c.tx.Lock()
	defer c.tx.Unlock()
	if c.closed.Load() {
		return 0, net.ErrClosed
	}
	if err := c.flushLocked(); err != nil {
		return 0, err
	}
	sent := 0
	for len(p) > 0 {
		chunk := p
		if len(chunk) > MaxPlaintextSize {
			chunk = chunk[:MaxPlaintextSize]
		}
		n, err := c.writeRecordLocked(chunk)
		sent += n
		if err != nil {
			return sent, err
		}
		p = p[len(chunk):]
	}
	return sent, nil
}

// flushLocked writes what remains of a record cut short by a timeout.
func (c *Conn) flushLocked() error {
	t := &c.tx
	if t.err != nil {
		return t.err
	}
	for len(t.pending) > 0 {
		n, err := c.conn.Write(t.pending)
		t.pending = t.pending[n:]
		if err != nil {
			return c.writeFailedLocked(err)
		}
	}
	return nil
}

func (c *Conn) writeFailedLocked(err error) error {
	if !isTimeout(err) {
		c.tx.err = fmt.Errorf("noise: write failed, session unusable: %w", err)
	}
	return err
}

// writeRecordLocked seals pt into one record and writes it. It returns
// len(pt) once the record is committed (at least partly written).
func (c *Conn) writeRecordLocked(pt []byte) (int, error) {
	t := &c.tx
	if t.ctr == invalidNonce {
		t.err = ErrCipherExhausted
		return 0, t.err
	}
	setNonce(&t.nonce, t.ctr)
	t.ctr++
	t.buf[0] = msgTypeRecord
	binary.BigEndian.PutUint16(t.buf[1:3], uint16(len(pt)+chacha20poly1305.Overhead))
	rec := t.aead.Seal(t.buf[:headerLen], t.nonce[:], pt, nil)
	n, err := c.conn.Write(rec)
	if err == nil {
		return len(pt), nil
	}
	if n == 0 && isTimeout(err) {
		// Nothing left this host: forget the record and its nonce.
		t.ctr--
		return 0, err
	}
	t.pending = rec[n:]
	return len(pt), c.writeFailedLocked(err)
}

// Close closes the underlying connection, unblocking Read and Write.
func (c *Conn) Close() error {
	c.closed.Store(true)
	return c.conn.Close()
}

// LocalAddr returns the underlying connection's local address.
func (c *Conn) LocalAddr() net.Addr { return c.conn.LocalAddr() }

// RemoteAddr returns the underlying connection's remote address.
func (c *Conn) RemoteAddr() net.Addr { return c.conn.RemoteAddr() }

// SetDeadline sets the underlying connection's deadlines.
func (c *Conn) SetDeadline(t time.Time) error { return c.conn.SetDeadline(t) }

// SetReadDeadline sets the underlying connection's read deadline.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.conn.SetReadDeadline(t) }

// SetWriteDeadline sets the underlying connection's write deadline.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.conn.SetWriteDeadline(t) }
