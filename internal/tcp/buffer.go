package tcp

import "sync"

// chunkSize is the unit in which send and receive buffers take memory. A
// segment (at most one MSS, far less than a chunk) spans at most two.
const chunkSize = 16 << 10

type chunk [chunkSize]byte

// chunkPool holds the chunks no buffer uses right now, shared by every
// connection of the process. A busy connection takes them as data comes
// and gives them back as it leaves, so a transfer reuses a few chunks
// instead of making garbage; chunks idle across two collections go back
// to the runtime.
var chunkPool = sync.Pool{New: func() any { return new(chunk) }}

// buffer is a byte queue kept in chunks taken only while they hold data:
// an empty buffer holds no chunk, whatever its connection's limit. It
// holds n bytes from byte 0; bytes past n may be written ahead with
// writeAt and taken in later with extend, which is how out-of-order data
// waits for the gap before it to fill. The caller bounds what it writes.
type buffer struct {
	slots []*chunk // a ring; nil where no data is held
	first int      // slot of the chunk that holds byte 0
	head  int      // offset of byte 0 in that chunk
	n     int      // bytes held from byte 0
}

// locate returns the slot and the offset in its chunk of byte off.
func (b *buffer) locate(off int) (slot, at int) {
	abs := b.head + off
	return (b.first + abs/chunkSize) % len(b.slots), abs % chunkSize
}

// reach makes the bytes below end addressable, growing the ring of
// slots (not the chunks) if needed.
func (b *buffer) reach(end int) {
	need := (b.head + end + chunkSize - 1) / chunkSize
	if need <= len(b.slots) {
		return
	}
	s := make([]*chunk, max(need, 2*len(b.slots), 4))
	for i := range b.slots {
		s[i] = b.slots[(b.first+i)%len(b.slots)]
	}
	b.slots, b.first = s, 0
}

// writeAt copies p to offset off, taking chunks as needed.
func (b *buffer) writeAt(off int, p []byte) {
	if len(p) == 0 {
		return
	}
	b.reach(off + len(p))
	for len(p) > 0 {
		i, at := b.locate(off)
		if b.slots[i] == nil {
			b.slots[i] = chunkPool.Get().(*chunk)
		}
		k := copy(b.slots[i][at:], p)
		p = p[k:]
		off += k
	}
}

// write appends p.
func (b *buffer) write(p []byte) {
	b.writeAt(b.n, p)
	b.n += len(p)
}

// extend takes n bytes written ahead into the held bytes.
func (b *buffer) extend(n int) { b.n += n }

// peek returns the n bytes at offset off, n at most chunkSize, as one or
// two slices.
func (b *buffer) peek(off, n int) (x, y []byte) {
	if n == 0 {
		return nil, nil
	}
	i, at := b.locate(off)
	if at+n <= chunkSize {
		return b.slots[i][at : at+n], nil
	}
	j := (i + 1) % len(b.slots)
	return b.slots[i][at:], b.slots[j][:n-(chunkSize-at)]
}

// read moves up to len(p) bytes from the front into p.
func (b *buffer) read(p []byte) int {
	n := min(len(p), b.n)
	for done := 0; done < n; {
		i, at := b.locate(0)
		k := copy(p[done:n], b.slots[i][at:])
		done += k
		b.discard(k)
	}
	return n
}

// discard drops n bytes from the front, giving back the chunks passed.
func (b *buffer) discard(n int) {
	if n <= 0 {
		return
	}
	b.n -= n
	b.head += n
	for b.head >= chunkSize {
		b.free(b.first)
		b.first = (b.first + 1) % len(b.slots)
		b.head -= chunkSize
	}
}

func (b *buffer) free(i int) {
	if c := b.slots[i]; c != nil {
		chunkPool.Put(c)
		b.slots[i] = nil
	}
}

// release gives back every chunk. The caller knows nothing is held,
// neither in order nor ahead.
func (b *buffer) release() {
	for i := range b.slots {
		b.free(i)
	}
	b.head = 0
}

// shrink releases the chunks and the ring of slots itself, for a buffer
// that is empty and idle.
func (b *buffer) shrink() {
	b.release()
	b.slots, b.first = nil, 0
}

// shrinkIf shrinks the buffer if closed, else releases its chunks.
func (b *buffer) shrinkIf(closed bool) {
	if closed {
		b.shrink()
	} else {
		b.release()
	}
}

// chunks returns how many chunks the buffer holds.
func (b *buffer) chunks() int {
	k := 0
	for _, c := range b.slots {
		if c != nil {
			k++
		}
	}
	return k
}
