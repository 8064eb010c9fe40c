package control

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"

	"github.com/microlink-go/microlink/internal/tailcfg"
)

// keepBuffer is the largest buffer kept between messages; larger ones are
// dropped after use so that one big netmap does not pin memory.
const keepBuffer = 1 << 20

// messageReader reads the map stream: each message is a little-endian
// uint32 size followed by that many bytes, a zstd frame (or raw JSON when
// not compressed). It holds one message at a time in reused buffers.
type messageReader struct {
	r          io.Reader
	compressed bool
	max        int // bound on the size field
	maxDecoded int
	zdec       *zstd.Decoder
	hdr        [4]byte
	raw        []byte
	out        []byte
}

func newMessageReader(max int) (*messageReader, error) {
	m := &messageReader{max: max, maxDecoded: 8 * max}
	d, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxMemory(uint64(m.maxDecoded)),
	)
	if err != nil {
		return nil, err
	}
	m.zdec = d
	return m, nil
}

func (m *messageReader) reset(r io.Reader, compressed bool) {
	m.r, m.compressed = r, compressed
	m.trim()
}

func (m *messageReader) close() {
	m.zdec.Close()
	m.raw, m.out = nil, nil
}

var errZeroMessage = errors.New("control: zero-length map message")

// next returns the next message's JSON, valid until the following call.
func (m *messageReader) next() ([]byte, error) {
	m.trim()
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
	if cap(m.raw) < int(size) {
		m.raw = make([]byte, size)
	}
	m.raw = m.raw[:size]
	if _, err := io.ReadFull(m.r, m.raw); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	if !m.compressed {
		return m.raw, nil
	}
	out, err := m.zdec.DecodeAll(m.raw, m.out[:0])
	if err != nil {
		return nil, fmt.Errorf("control: decompressing map message: %w", err)
	}
	if len(out) > m.maxDecoded {
		return nil, fmt.Errorf("control: decoded map message exceeds limit %d", m.maxDecoded)
	}
	m.out = out
	return out, nil
}

// trim drops buffers grown past keepBuffer.
func (m *messageReader) trim() {
	if cap(m.raw) > keepBuffer {
		m.raw = nil
	}
	if cap(m.out) > keepBuffer {
		m.out = nil
	}
}

// decodeMapResponse decodes one map message.
func decodeMapResponse(b []byte) (*tailcfg.MapResponse, error) {
	resp := new(tailcfg.MapResponse)
	if err := json.Unmarshal(b, resp); err != nil {
		return nil, fmt.Errorf("control: decoding map response: %w", err)
	}
	return resp, nil
}
