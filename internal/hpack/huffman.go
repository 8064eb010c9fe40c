package hpack

import "sync"

// huffLen is the length in bits of the Huffman code of each symbol, the
// last (256) being EOS (RFC 7541, appendix B). The code is canonical:
// codes of one length are consecutive in the order of their symbols, and
// shorter codes come first, so the lengths define it.
var huffLen = [257]uint8{
	13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28,
	28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,
	6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6,
	5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,
	13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
	7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,
	15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5,
	6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,
	20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23,
	24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
	22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23,
	21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
	26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,
	19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,
	20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23,
	26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
	30,
}

const maxHuffLen = 30

// huffCanon is the canonical code: for each length, its first code and
// the index in syms of its first symbol; syms lists the symbols by code.
type huffCanon struct {
	first, start, count [maxHuffLen + 1]uint32
	syms                [257]uint16
}

var huffTable = sync.OnceValue(func() *huffCanon {
	t := new(huffCanon)
	for _, l := range huffLen {
		t.count[l]++
	}
	code, k := uint32(0), uint32(0)
	for l := 1; l <= maxHuffLen; l++ {
		code <<= 1
		t.first[l], t.start[l] = code, k
		code += t.count[l]
		k += t.count[l]
	}
	var next [maxHuffLen + 1]uint32
	for s, l := range huffLen {
		t.syms[t.start[l]+next[l]] = uint16(s)
		next[l]++
	}
	return t
})

// huffmanDecode decodes a Huffman-coded string of at most max bytes
// (max <= 0: no limit). The padding must be at most 7 bits, all ones
// (a prefix of EOS), and EOS itself is an error (RFC 7541, 5.2).
func huffmanDecode(b []byte, max int) (string, error) {
	t := huffTable()
	out := make([]byte, 0, len(b)*8/5)
	code, l := uint32(0), 0
	for _, c := range b {
		for i := 7; i >= 0; i-- {
			code = code<<1 | uint32(c>>i&1)
			l++
			if d := code - t.first[l]; d < t.count[l] {
				s := t.syms[t.start[l]+d]
				if s == 256 {
					return "", errCorrupt
				}
				if max > 0 && len(out) == max {
					return "", ErrStringLength
				}
				out = append(out, byte(s))
				code, l = 0, 0
			} else if l == maxHuffLen {
				return "", errCorrupt
			}
		}
	}
	if l > 7 || code != 1<<l-1 {
		return "", errCorrupt
	}
	return string(out), nil
}
