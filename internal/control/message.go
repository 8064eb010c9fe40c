package control

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/microlink-go/microlink/internal/netmap"
	"github.com/microlink-go/microlink/internal/zstd"
)

// keepWindow is the largest decompression window kept between messages: a
// decoder that held a bigger one (a large netmap) is replaced after use so
// that the window does not pin memory.
const keepWindow = 1 << 20

// messageReader reads the map stream: each message is a little-endian
// uint32 size followed by that many bytes, a zstd frame (or raw JSON when
// not compressed). It decompresses a message as a stream into the netmap
// decoder, so that neither the compressed nor the decompressed message is
// held whole: a large netmap costs its compact form and the decompression
// window, which for the frames control sends (a single segment) is the
// message's decoded size.
type messageReader struct {
	r          io.Reader
	compressed bool
	max        int // bound on the size field
	maxDecoded int
	zdec       *zstd.Decoder
	hdr        [4]byte
	body       io.LimitedReader // the current message
	out        countingReader   // its decoded bytes
	dec        netmap.Decoder
}

func newMessageReader(max int) *messageReader {
	return &messageReader{max: max, maxDecoded: 8 * max, zdec: zstd.NewReader(8 * max)}
}

func (m *messageReader) reset(r io.Reader, compressed bool) {
	m.r, m.compressed = r, compressed
}

func (m *messageReader) close() {
	m.zdec.Reset(nil)
}

var errZeroMessage = errors.New("control: zero-length map message")

// next reads and decodes the next message.
func (m *messageReader) next() (*netmap.Message, error) {
	if _, err := io.ReadFull(m.r, m.hdr[:]); err != nil {
		return nil, err
	}
	size := binary.LittleEndian.Uint32(m.hdr[:])
	if size == 0 {
		return nil, errZeroMessage
	}
	if int64(size) > int64(m.max) {
		return nil, fmt.Errorf("control: map message of %d bytes exceeds limit %d", size, m.max)
	}
	m.body = io.LimitedReader{R: m.r, N: int64(size)}
	m.out = countingReader{r: &m.body, max: int64(m.maxDecoded)}
	if m.compressed {
		m.zdec.Reset(&m.body)
		m.out.r = m.zdec
	}
	msg, err := m.dec.Decode(&m.out)
	decoded, readErr, left := m.out.n, m.out.err, m.body.N
	m.out, m.body = countingReader{}, io.LimitedReader{} // they hold the decoder and the stream
	if m.compressed {
		m.zdec.Reset(nil)
		if decoded > keepWindow {
			m.zdec = zstd.NewReader(m.maxDecoded)
		}
	}
	if err != nil {
		if readErr != nil {
			err = readErr // the stream's own error says more
		}
		return nil, err
	}
	if left > 0 {
		return nil, fmt.Errorf("control: %d bytes after the map message's frames", left)
	}
	return msg, nil
}

// countingReader counts the decoded bytes of a message and fails past max.
// It keeps the error of the stream under it, which explains a decoding
// error better than the decoder can.
type countingReader struct {
	r   io.Reader
	n   int64
	max int64
	err error // a read error other than io.EOF
}

var errTruncated = errors.New("control: map message ends early")

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.n > c.max {
		c.err = fmt.Errorf("control: decoded map message exceeds limit %d", c.max)
		return n, c.err
	}
	switch {
	case err == io.ErrUnexpectedEOF:
		c.err = errTruncated
	case err != nil && err != io.EOF:
		c.err = fmt.Errorf("control: reading map message: %w", err)
	}
	if c.err != nil {
		return n, c.err
	}
	return n, err
}
