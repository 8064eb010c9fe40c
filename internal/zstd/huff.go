package zstd

import "math/bits"

const maxHuffBits = 11

// huffTable decodes Huffman-coded literals: indexed by the next maxBits
// bits of the stream, each entry holds a symbol in its low byte and the
// length of its code above.
type huffTable struct {
	maxBits uint8
	e       [1 << maxHuffBits]uint16
}

// read reads a Huffman tree description (RFC 8878, 4.2.1) and returns the
// number of bytes it takes.
func (h *huffTable) read(in []byte, scratch *fseTable) (int, error) {
	if len(in) == 0 {
		return 0, errCorrupt
	}
	var w [256]uint8
	nw := 0
	n := 0
	if hb := int(in[0]); hb < 128 { // FSE-compressed weights
		if len(in) < 1+hb || hb == 0 {
			return 0, errCorrupt
		}
		var err error
		if nw, err = fseWeights(in[1:1+hb], &w, scratch); err != nil {
			return 0, err
		}
		n = 1 + hb
	} else { // 4-bit weights
		nw = hb - 127
		n = 1 + (nw+1)/2
		if len(in) < n {
			return 0, errCorrupt
		}
		for i := 0; i < nw; i++ {
			b := in[1+i/2]
			if i&1 == 0 {
				b >>= 4
			}
			w[i] = b & 15
		}
	}
	var rank [maxHuffBits + 2]int
	total := 0
	for _, x := range w[:nw] {
		if x > maxHuffBits {
			return 0, errCorrupt
		}
		rank[x]++
		if x > 0 {
			total += 1 << (x - 1)
		}
	}
	if total == 0 {
		return 0, errCorrupt
	}
	maxBits := bits.Len(uint(total))
	if maxBits > maxHuffBits {
		return 0, errCorrupt
	}
	rest := 1<<maxBits - total // the last symbol's share: a power of two
	if rest&(rest-1) != 0 {
		return 0, errCorrupt
	}
	last := uint8(bits.Len(uint(rest)))
	w[nw] = last
	rank[last]++
	nw++
	if rank[1] < 2 || rank[1]&1 != 0 {
		return 0, errCorrupt
	}
	// Codes of weight 1 (the longest) take the lowest entries.
	var start [maxHuffBits + 2]int
	pos := 0
	for x := 1; x <= maxBits; x++ {
		start[x] = pos
		pos += rank[x] << (x - 1)
	}
	h.maxBits = uint8(maxBits)
	for s, x := range w[:nw] {
		if x == 0 {
			continue
		}
		e := uint16(s) | uint16(maxBits+1-int(x))<<8
		p := start[x]
		for i := 0; i < 1<<(x-1); i++ {
			h.e[p+i] = e
		}
		start[x] += 1 << (x - 1)
	}
	return n, nil
}

// fseWeights decodes FSE-compressed Huffman weights: two interleaved
// states over one backward stream (RFC 8878, 4.2.1.2).
func fseWeights(in []byte, w *[256]uint8, t *fseTable) (int, error) {
	var norm [256]int16
	nsym, log, n, err := readCounts(in, &norm, 255, 6)
	if err != nil {
		return 0, err
	}
	if err := t.build(norm[:nsym], log); err != nil {
		return 0, err
	}
	var br backReader
	if err := br.init(in[n:]); err != nil {
		return 0, err
	}
	s1, s2 := br.get(log), br.get(log)
	nw := 0
	for {
		if nw > 253 {
			return 0, errCorrupt
		}
		e := t.e[s1]
		w[nw] = e.sym
		nw++
		s1 = uint32(e.base) + br.get(e.nb)
		br.fill()
		if br.overflowed() {
			w[nw] = t.e[s2].sym
			nw++
			break
		}
		if nw > 253 {
			return 0, errCorrupt
		}
		e = t.e[s2]
		w[nw] = e.sym
		nw++
		s2 = uint32(e.base) + br.get(e.nb)
		br.fill()
		if br.overflowed() {
			w[nw] = t.e[s1].sym
			nw++
			break
		}
	}
	return nw, nil
}

// decode fills out from one Huffman-coded stream, which must end exactly.
func (h *huffTable) decode(out, in []byte) error {
	var br backReader
	if err := br.init(in); err != nil {
		return err
	}
	return h.finish(&br, out)
}

// decode4 fills out from four streams, of (len(out)+3)/4 symbols each but
// the last, decoding them in turn so that their lookups overlap.
func (h *huffTable) decode4(out []byte, in *[4][]byte) error {
	var br [4]backReader
	for i := range br {
		if err := br[i].init(in[i]); err != nil {
			return err
		}
	}
	per := (len(out) + 3) / 4
	o := [4][]byte{out[:per], out[per : 2*per], out[2*per : 3*per], out[3*per:]}
	shift := 64 - uint(h.maxBits)
	const mask = 1<<maxHuffBits - 1
	i := 0
	for ; i+4 <= len(o[3]); i += 4 {
		for j := range br {
			b := &br[j]
			b.fill()
			v, u := b.value, b.used
			p := o[j][i : i+4]
			e := h.e[(v<<u)>>shift&mask]
			p[0] = byte(e)
			u += uint(e >> 8)
			e = h.e[(v<<u)>>shift&mask]
			p[1] = byte(e)
			u += uint(e >> 8)
			e = h.e[(v<<u)>>shift&mask]
			p[2] = byte(e)
			u += uint(e >> 8)
			e = h.e[(v<<u)>>shift&mask]
			p[3] = byte(e)
			b.used = u + uint(e>>8)
		}
	}
	for j := range br {
		if err := h.finish(&br[j], o[j][i:]); err != nil {
			return err
		}
	}
	return nil
}

// finish decodes the rest of a stream into out; the stream must end
// exactly.
func (h *huffTable) finish(br *backReader, out []byte) error {
	shift := 64 - uint(h.maxBits)
	const mask = 1<<maxHuffBits - 1
	i := 0
	for ; i+4 <= len(out); i += 4 { // 4 codes of at most 11 bits a fill
		br.fill()
		v, u := br.value, br.used
		e := h.e[(v<<u)>>shift&mask]
		out[i] = byte(e)
		u += uint(e >> 8)
		e = h.e[(v<<u)>>shift&mask]
		out[i+1] = byte(e)
		u += uint(e >> 8)
		e = h.e[(v<<u)>>shift&mask]
		out[i+2] = byte(e)
		u += uint(e >> 8)
		e = h.e[(v<<u)>>shift&mask]
		out[i+3] = byte(e)
		br.used = u + uint(e>>8)
	}
	for ; i < len(out); i++ {
		br.fill()
		e := h.e[br.peek(h.maxBits)]
		out[i] = byte(e)
		br.used += uint(e >> 8)
	}
	if !br.finished() {
		return errCorrupt
	}
	return nil
}
