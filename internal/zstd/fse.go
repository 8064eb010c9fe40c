package zstd

import "math/bits"

// fseEntry is one state of an FSE decoding table: the symbol it emits, and
// the next state, base plus the next nb bits of the stream.
type fseEntry struct {
	sym  uint8
	nb   uint8
	base uint16
}

// fseTable is an FSE decoding table of 1<<log states.
type fseTable struct {
	log uint8
	e   [1 << 9]fseEntry
}

// readCounts reads an FSE table description (RFC 8878, 4.1.1): the
// accuracy log and the normalized count of each symbol, at most maxSym and
// maxLog. It returns the number of symbols, the log and the bytes read.
func readCounts(in []byte, norm *[256]int16, maxSym int, maxLog uint8) (nsym int, log uint8, n int, err error) {
	pos := 0 // in bits
	peek := func(nb int) int {
		var v uint64
		for i := 0; i < 5; i++ {
			if j := pos>>3 + i; j < len(in) {
				v |= uint64(in[j]) << (8 * i)
			}
		}
		return int(v>>(pos&7)) & (1<<nb - 1)
	}
	if len(in) == 0 {
		return 0, 0, 0, errCorrupt
	}
	log = uint8(peek(4)) + 5
	pos += 4
	if log > maxLog {
		return 0, 0, 0, errCorrupt
	}
	remaining := 1<<log + 1
	threshold := 1 << log
	nb := int(log) + 1
	sym := 0
	prev0 := false
	for remaining > 1 && sym <= maxSym {
		if prev0 {
			n0 := sym
			for peek(2) == 3 {
				n0 += 3
				pos += 2
				if n0 > maxSym {
					return 0, 0, 0, errCorrupt
				}
			}
			n0 += peek(2)
			pos += 2
			if n0 > maxSym {
				return 0, 0, 0, errCorrupt
			}
			for ; sym < n0; sym++ {
				norm[sym] = 0
			}
		}
		max := 2*threshold - 1 - remaining
		v := peek(nb)
		var count int
		if v&(threshold-1) < max {
			count = v & (threshold - 1)
			pos += nb - 1
		} else {
			count = v & (2*threshold - 1)
			if count >= threshold {
				count -= max
			}
			pos += nb
		}
		count-- // -1: a probability below one
		if count < 0 {
			remaining--
		} else {
			remaining -= count
		}
		norm[sym] = int16(count)
		sym++
		prev0 = count == 0
		for remaining < threshold {
			nb--
			threshold >>= 1
		}
	}
	n = (pos + 7) >> 3
	if remaining != 1 || n > len(in) {
		return 0, 0, 0, errCorrupt
	}
	return sym, log, n, nil
}

// build fills t from the normalized counts of nsym symbols, which add up
// to 1<<log (RFC 8878, 4.1.1).
func (t *fseTable) build(norm []int16, log uint8) error {
	size := 1 << log
	high := size - 1
	var next [256]uint16
	t.log = log
	for s, c := range norm {
		if c == -1 {
			if high < 0 {
				return errCorrupt
			}
			t.e[high].sym = uint8(s)
			high--
			next[s] = 1
		} else if c > 0 {
			next[s] = uint16(c)
		}
	}
	step := size>>1 + size>>3 + 3
	mask := size - 1
	pos := 0
	for s, c := range norm {
		for i := 0; i < int(c); i++ {
			t.e[pos].sym = uint8(s)
			for {
				pos = (pos + step) & mask
				if pos <= high {
					break
				}
			}
		}
	}
	if pos != 0 {
		return errCorrupt
	}
	for u := 0; u < size; u++ {
		s := t.e[u].sym
		ns := next[s]
		next[s]++
		nb := log - uint8(bits.Len16(ns)-1)
		t.e[u].nb = nb
		t.e[u].base = ns<<nb - uint16(size)
	}
	return nil
}

// rle makes t a table of one state that always emits sym.
func (t *fseTable) rle(sym uint8) {
	t.log = 0
	t.e[0] = fseEntry{sym: sym}
}
