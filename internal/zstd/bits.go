package zstd

import (
	"encoding/binary"
	"math/bits"
)

// backReader reads a bitstream backwards, as Huffman and FSE streams are
// written: the last byte holds a marker bit above the first bits to read,
// and reading proceeds towards the first byte. Bits past the start read as
// zeros; overflowed reports it.
type backReader struct {
	in    []byte
	off   int    // bytes in[:off] are not loaded yet
	value uint64 // the loaded bits, the next to read at the top
	used  uint   // bits of value already read (more than 64: overflow)
}

func (b *backReader) init(in []byte) error {
	if len(in) == 0 || in[len(in)-1] == 0 {
		return errCorrupt
	}
	b.in, b.off, b.value, b.used = in, len(in), 0, 64
	b.fill()
	b.used += uint(9 - bits.Len8(in[len(in)-1])) // the padding and the marker
	return nil
}

// fill loads bytes until at most 7 bits of value are read or all bytes
// are loaded, so that at least 57 bits can be read before the next fill
// while the stream lasts.
func (b *backReader) fill() {
	if len(b.in) >= 8 { // value holds in[off:off+8]
		k := min(int(b.used>>3), b.off)
		b.off -= k
		b.used -= uint(k) * 8
		b.value = binary.LittleEndian.Uint64(b.in[b.off:])
		return
	}
	for b.used >= 8 && b.off > 0 {
		b.off--
		b.value = b.value<<8 | uint64(b.in[b.off])
		b.used -= 8
	}
}

// get reads n bits (n <= 57 after a fill).
func (b *backReader) get(n uint8) uint32 {
	v := (b.value << b.used) >> (64 - uint(n)) // 0 for n == 0 or past the start
	if n == 0 {
		v = 0
	}
	b.used += uint(n)
	return uint32(v)
}

// peek returns the next n bits (1 <= n <= 57) without reading them.
func (b *backReader) peek(n uint8) uint32 {
	return uint32((b.value << b.used) >> (64 - uint(n)))
}

// finished reports whether exactly every bit of the stream was read.
func (b *backReader) finished() bool { return b.off == 0 && b.used == 64 }

// overflowed reports whether more bits were read than the stream holds.
func (b *backReader) overflowed() bool { return b.off == 0 && b.used > 64 }
