// Package zstd decodes Zstandard (RFC 8878): the compression of the map
// responses that control streams. It decodes only, with no dictionaries,
// and holds at most one frame's window: for a frame of a single segment,
// as control sends, the frame's content.
package zstd

import (
	"encoding/binary"
	"errors"
	"io"
)

const (
	frameMagic = 0xfd2fb528
	skipMagic  = 0x184d2a50 // to 0x184d2a5f: skippable frames
	maxBlock   = 128 << 10
	minWindow  = 1 << 10
)

var (
	errCorrupt = errors.New("zstd: corrupt input")
	// ErrMagic is returned for input that does not start with a frame.
	ErrMagic = errors.New("zstd: not a zstd frame")
	// ErrWindowTooLarge is returned for a frame that needs more memory than
	// the decoder may use.
	ErrWindowTooLarge = errors.New("zstd: frame needs a window larger than allowed")
	errDictionary     = errors.New("zstd: frame needs a dictionary")
	errChecksum       = errors.New("zstd: content checksum mismatch")
	errSize           = errors.New("zstd: content size differs from the frame header's")
)

// A Decoder decompresses the frames read from a reader into a stream. Its
// buffers are kept across Reset, so that decoding small frames does not
// allocate.
type Decoder struct {
	r         io.Reader
	maxWindow uint64
	err       error

	inFrame, last, checksum, hasSize bool
	size                             uint64 // the content size, if hasSize
	window                           int
	total                            uint64 // content decoded in this frame
	rep                              [3]int
	sum                              xxh64

	hist       []byte // content: the window and the newest block
	served     int    // bytes of hist returned by Read
	blockStart int    // where the block being decoded starts in hist
	blockMax   int

	in, lits   []byte
	hdr        [14]byte
	huff       huffTable
	haveHuff   bool
	ll, of, ml seqTable
	scratch    fseTable
}

// NewReader returns a Decoder that refuses frames whose window (for a
// single segment, the content) is larger than maxWindow bytes.
func NewReader(maxWindow int) *Decoder {
	return &Decoder{maxWindow: uint64(maxWindow)}
}

// Reset makes d decode the frames read from r, forgetting any frame it
// was in. Reset(nil) drops the reference to the last reader.
func (d *Decoder) Reset(r io.Reader) {
	d.r, d.err, d.inFrame = r, nil, false
	d.hist, d.served = d.hist[:0], 0
}

// Read reads decompressed content. It returns io.EOF after the last
// complete frame, and io.ErrUnexpectedEOF when the input ends inside one.
func (d *Decoder) Read(p []byte) (int, error) {
	for {
		if d.served < len(d.hist) {
			n := copy(p, d.hist[d.served:])
			d.served += n
			return n, nil
		}
		if d.err != nil {
			return 0, d.err
		}
		if len(p) == 0 {
			return 0, nil
		}
		d.err = d.step()
	}
}

// step reads a frame header, a block, or the end of a frame.
func (d *Decoder) step() error {
	if d.r == nil {
		return io.EOF
	}
	switch {
	case !d.inFrame:
		return d.frameHeader()
	case !d.last:
		return d.block()
	}
	d.inFrame = false
	if d.checksum {
		if err := d.read(d.hdr[:4]); err != nil {
			return err
		}
		if binary.LittleEndian.Uint32(d.hdr[:]) != uint32(d.sum.sum()) {
			return errChecksum
		}
	}
	if d.hasSize && d.total != d.size {
		return errSize
	}
	return nil
}

// read fills b from the input, whose end here is unexpected.
func (d *Decoder) read(b []byte) error {
	_, err := io.ReadFull(d.r, b)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

func (d *Decoder) frameHeader() error {
	n, err := io.ReadFull(d.r, d.hdr[:4])
	if err != nil {
		if n == 0 && err == io.EOF {
			return io.EOF
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	magic := binary.LittleEndian.Uint32(d.hdr[:])
	if magic&^0xf == skipMagic {
		if err := d.read(d.hdr[:4]); err != nil {
			return err
		}
		n := int64(binary.LittleEndian.Uint32(d.hdr[:]))
		m, err := io.CopyN(io.Discard, d.r, n)
		if m < n && err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	if magic != frameMagic {
		return ErrMagic
	}
	if err := d.read(d.hdr[:1]); err != nil {
		return err
	}
	desc := d.hdr[0]
	if desc&8 != 0 { // reserved
		return errCorrupt
	}
	single := desc&0x20 != 0
	dictLen := [4]int{0, 1, 2, 4}[desc&3]
	sizeLen := [4]int{0, 2, 4, 8}[desc>>6]
	if single && sizeLen == 0 {
		sizeLen = 1
	}
	winLen := 1
	if single {
		winLen = 0
	}
	h := d.hdr[:winLen+dictLen+sizeLen]
	if err := d.read(h); err != nil {
		return err
	}
	var window uint64
	if !single {
		exp, mant := uint(h[0]>>3), uint64(h[0]&7)
		base := uint64(1) << (10 + exp)
		window = base + base/8*mant
	}
	var dict uint64
	for i := dictLen - 1; i >= 0; i-- {
		dict = dict<<8 | uint64(h[winLen+i])
	}
	if dict != 0 {
		return errDictionary
	}
	d.hasSize = sizeLen > 0
	if d.hasSize {
		var b [8]byte
		copy(b[:], h[winLen+dictLen:])
		d.size = binary.LittleEndian.Uint64(b[:])
		if sizeLen == 2 {
			d.size += 256
		}
		if single {
			window = d.size
		}
	}
	if window > d.maxWindow {
		return ErrWindowTooLarge
	}
	// A single segment's window is its content, but at least the 1 KiB
	// every frame may assume (RFC 8878, 3.1.1.1.2).
	d.window = max(int(window), minWindow)
	d.inFrame, d.last, d.checksum = true, false, desc&4 != 0
	d.total = 0
	d.rep = [3]int{1, 4, 8}
	d.sum.reset()
	d.haveHuff = false
	d.ll.ok, d.of.ok, d.ml.ok = false, false, false
	d.hist, d.served = d.hist[:0], 0
	return nil
}

// block decodes the next block of the frame into hist.
func (d *Decoder) block() error {
	if err := d.read(d.hdr[:3]); err != nil {
		return err
	}
	h := int(d.hdr[0]) | int(d.hdr[1])<<8 | int(d.hdr[2])<<16
	d.last = h&1 != 0
	kind, size := h>>1&3, h>>3
	// Block_Maximum_Size: no block, and no block's content, is larger
	// than the window or 128 KiB.
	limit := min(maxBlock, d.window)
	if kind == 3 || size > limit {
		return errCorrupt
	}
	d.blockMax = limit
	if d.hasSize && d.size-d.total < uint64(limit) {
		d.blockMax = int(d.size - d.total)
	}
	d.makeRoom()
	d.blockStart = len(d.hist)
	switch kind {
	case 0: // raw
		if size > d.blockMax {
			return errCorrupt
		}
		d.hist = d.hist[:d.blockStart+size]
		if err := d.read(d.hist[d.blockStart:]); err != nil {
			return err
		}
	case 1: // RLE
		if err := d.read(d.hdr[:1]); err != nil {
			return err
		}
		if size > d.blockMax {
			return errCorrupt
		}
		b := d.hdr[0]
		for i := 0; i < size; i++ {
			d.hist = append(d.hist, b)
		}
	case 2: // compressed
		if cap(d.in) < size {
			d.in = make([]byte, size, max(size, 1<<10))
		}
		d.in = d.in[:size]
		if err := d.read(d.in); err != nil {
			return err
		}
		if err := d.decodeBlock(d.in); err != nil {
			return err
		}
	}
	out := d.hist[d.blockStart:]
	d.total += uint64(len(out))
	if d.checksum {
		d.sum.write(out)
	}
	return nil
}

// makeRoom makes hist able to take a block without growing: it drops
// content older than the window, all of which Read has returned, and
// grows the buffer as far as the frame needs.
func (d *Decoder) makeRoom() {
	slack := max(d.window/4, maxBlock)
	if len(d.hist) > d.window+slack {
		n := copy(d.hist, d.hist[len(d.hist)-d.window:])
		d.hist, d.served = d.hist[:n], n
	}
	need := len(d.hist) + d.blockMax
	if need <= cap(d.hist) {
		return
	}
	// Grow to the size the frame declares at once (a copy and the old
	// buffer would double the peak of a large netmap), else by doubling.
	c := max(2*cap(d.hist), need)
	if d.hasSize {
		c = int(d.size)
	}
	c = max(min(c, d.window+slack+maxBlock), need)
	h := make([]byte, len(d.hist), c)
	copy(h, d.hist)
	d.hist = h
}
