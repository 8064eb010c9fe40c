// Package tcpxfer is the transfer protocol of the TCP interop tests and
// benchmarks. A server, on the node under test, answers requests that a
// client, the far peer, sends on a connection of its own: "P" (push) and
// a size, after which the client sends that many bytes and the server
// checks them and answers with one verdict byte; or "G" (get) and a size,
// after which the server sends that many bytes and closes; or "H" (hold),
// after which the server answers one byte and keeps the connection open
// until the client closes it. The bytes are
// a fixed pseudo-random stream, checked as they arrive without hashing,
// so both ends spend their time on TCP rather than on the check.
package tcpxfer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
)

const (
	opPush = 'P'
	opGet  = 'G'
	opHold = 'H'

	blockBits = 16
	blockSize = 1 << blockBits
)

// block is the stream's repeating part; byte i of the stream is
// block[i%blockSize] plus the block number, so that a block delivered in
// the wrong place is noticed.
var block = func() []byte {
	b := make([]byte, blockSize)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}()

// fill writes the stream from offset off into b.
func fill(b []byte, off int64) {
	for len(b) > 0 {
		i := int(off & (blockSize - 1))
		k := copy(b, block[i:])
		add := byte(off >> blockBits)
		for j := range b[:k] {
			b[j] += add
		}
		b, off = b[k:], off+int64(k)
	}
}

// check reports whether b is the stream from offset off.
func check(b []byte, off int64) bool {
	for len(b) > 0 {
		i := int(off & (blockSize - 1))
		n := min(len(b), blockSize-i)
		add := byte(off >> blockBits)
		for j, v := range b[:n] {
			if v != block[i+j]+add {
				return false
			}
		}
		b, off = b[n:], off+int64(n)
	}
	return true
}

// ErrCorrupt reports data that is not the stream.
var ErrCorrupt = errors.New("tcpxfer: data corrupted")

// Serve answers requests on the connections l accepts until l is closed.
func Serve(l net.Listener) error {
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			Handle(c)
		}()
	}
}

// Handle answers the request on c.
func Handle(c net.Conn) error {
	var req [9]byte
	if _, err := io.ReadFull(c, req[:]); err != nil {
		return err
	}
	size := int64(binary.BigEndian.Uint64(req[1:]))
	switch req[0] {
	case opPush:
		ok := receive(c, size) == nil
		verdict := []byte{1}
		if ok {
			verdict[0] = 0
		}
		_, err := c.Write(verdict)
		return err
	case opGet:
		return send(c, size)
	case opHold:
		if _, err := c.Write([]byte{0}); err != nil {
			return err
		}
		_, err := io.Copy(io.Discard, c)
		return err
	}
	return fmt.Errorf("tcpxfer: unknown request %q", req[0])
}

// Push sends size bytes on c and waits for the server's verdict.
func Push(c net.Conn, size int64) error {
	if err := request(c, opPush, size); err != nil {
		return err
	}
	if err := send(c, size); err != nil {
		return err
	}
	var verdict [1]byte
	if _, err := io.ReadFull(c, verdict[:]); err != nil {
		return fmt.Errorf("tcpxfer: no verdict: %w", err)
	}
	if verdict[0] != 0 {
		return ErrCorrupt
	}
	return nil
}

// Get asks for size bytes on c and checks them.
func Get(c net.Conn, size int64) error {
	if err := request(c, opGet, size); err != nil {
		return err
	}
	if err := receive(c, size); err != nil {
		return err
	}
	// The server closes after the data.
	if n, _ := c.Read(make([]byte, 1)); n != 0 {
		return fmt.Errorf("tcpxfer: more than %d bytes", size)
	}
	return nil
}

// Hold makes the server answer on c and keep it open, idle, until the
// client closes c.
func Hold(c net.Conn) error {
	if err := request(c, opHold, 0); err != nil {
		return err
	}
	var b [1]byte
	_, err := io.ReadFull(c, b[:])
	return err
}

func request(c net.Conn, op byte, size int64) error {
	var req [9]byte
	req[0] = op
	binary.BigEndian.PutUint64(req[1:], uint64(size))
	_, err := c.Write(req[:])
	return err
}

func send(c net.Conn, size int64) error {
	buf := make([]byte, 64<<10)
	for off := int64(0); off < size; {
		n := int(min(int64(len(buf)), size-off))
		fill(buf[:n], off)
		if _, err := c.Write(buf[:n]); err != nil {
			return fmt.Errorf("tcpxfer: after %d of %d bytes: %w", off, size, err)
		}
		off += int64(n)
	}
	return nil
}

func receive(c net.Conn, size int64) error {
	buf := make([]byte, 64<<10)
	for off := int64(0); off < size; {
		n, err := c.Read(buf[:min(int64(len(buf)), size-off)])
		if n > 0 && !check(buf[:n], off) {
			return ErrCorrupt
		}
		off += int64(n)
		if err != nil && off < size {
			return fmt.Errorf("tcpxfer: after %d of %d bytes: %w", off, size, err)
		}
	}
	return nil
}
