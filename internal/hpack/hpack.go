// Package hpack encodes and decodes HTTP/2 header blocks (RFC 7541) for
// the HTTP/2 client of the control connection.
//
// The encoder writes every field as a literal without indexing and
// without Huffman coding: requests to control carry a handful of short
// headers, and an encoder that never uses the dynamic table needs no
// state. The decoder is complete: static and dynamic tables, table size
// updates, and Huffman-coded strings.
package hpack

import "errors"

// A HeaderField is a name and a value.
type HeaderField struct {
	Name, Value string
}

// AppendField appends f to a header block as a literal field without
// indexing (RFC 7541, 6.2.2), with a literal name.
func AppendField(dst []byte, f HeaderField) []byte {
	dst = append(dst, 0)
	dst = appendString(dst, f.Name)
	return appendString(dst, f.Value)
}

func appendString(dst []byte, s string) []byte {
	dst = appendInt(dst, 7, 0, uint64(len(s)))
	return append(dst, s...)
}

// appendInt appends v as an integer of an n-bit prefix (RFC 7541, 5.1),
// the prefix's byte starting with the bits of first.
func appendInt(dst []byte, n uint, first byte, v uint64) []byte {
	max := uint64(1)<<n - 1
	if v < max {
		return append(dst, first|byte(v))
	}
	dst = append(dst, first|byte(max))
	v -= max
	for v >= 128 {
		dst = append(dst, byte(v)|128)
		v >>= 7
	}
	return append(dst, byte(v))
}

var (
	errCorrupt   = errors.New("hpack: malformed header block")
	errIndex     = errors.New("hpack: header field index out of range")
	errTableSize = errors.New("hpack: dynamic table size update over the limit")
	// ErrStringLength is returned for a string longer than the limit set
	// with SetMaxStringLength.
	ErrStringLength = errors.New("hpack: string too long")
)

// A Decoder decodes the header blocks of one connection, keeping the
// dynamic table between them.
type Decoder struct {
	dyn       []HeaderField // oldest first
	size      int           // of dyn, counted as RFC 7541, 4.1 says
	max       int           // the table's current maximum size
	limit     int           // the largest maximum the peer may set
	maxString int
}

// NewDecoder returns a Decoder for a connection whose
// SETTINGS_HEADER_TABLE_SIZE is limit.
func NewDecoder(limit int) *Decoder {
	return &Decoder{max: limit, limit: limit}
}

// SetMaxStringLength makes strings longer than n bytes (after Huffman
// decoding) an error; n <= 0 means no limit.
func (d *Decoder) SetMaxStringLength(n int) { d.maxString = n }

// DecodeFull decodes a complete header block.
func (d *Decoder) DecodeFull(b []byte) ([]HeaderField, error) {
	var fields []HeaderField
	for len(b) > 0 {
		c := b[0]
		switch {
		case c&0x80 != 0: // indexed field
			i, rest, err := readInt(b, 7)
			if err != nil {
				return nil, err
			}
			f, err := d.at(i)
			if err != nil {
				return nil, err
			}
			fields, b = append(fields, f), rest
		case c&0xe0 == 0x20: // dynamic table size update
			if len(fields) > 0 {
				return nil, errCorrupt
			}
			n, rest, err := readInt(b, 5)
			if err != nil {
				return nil, err
			}
			if n > uint64(d.limit) {
				return nil, errTableSize
			}
			d.max, b = int(n), rest
			d.evict(0)
		default: // a literal: with incremental indexing, or not
			index := c&0xc0 == 0x40
			prefix := uint(4)
			if index {
				prefix = 6
			}
			i, rest, err := readInt(b, prefix)
			if err != nil {
				return nil, err
			}
			var f HeaderField
			if i > 0 {
				nf, err := d.at(i)
				if err != nil {
					return nil, err
				}
				f.Name = nf.Name
			} else if f.Name, rest, err = d.readString(rest); err != nil {
				return nil, err
			}
			if f.Value, rest, err = d.readString(rest); err != nil {
				return nil, err
			}
			if index {
				d.add(f)
			}
			fields, b = append(fields, f), rest
		}
	}
	return fields, nil
}

// at returns the field of index i: the static table, then the dynamic
// one, newest first.
func (d *Decoder) at(i uint64) (HeaderField, error) {
	switch {
	case i == 0:
		return HeaderField{}, errIndex
	case i <= uint64(len(staticTable)):
		return staticTable[i-1], nil
	case i-uint64(len(staticTable)) <= uint64(len(d.dyn)):
		return d.dyn[len(d.dyn)-int(i-uint64(len(staticTable)))], nil
	}
	return HeaderField{}, errIndex
}

func entrySize(f HeaderField) int { return len(f.Name) + len(f.Value) + 32 }

// add inserts f into the dynamic table, evicting the oldest entries to
// make room; an entry larger than the table empties it (RFC 7541, 4.4).
func (d *Decoder) add(f HeaderField) {
	n := entrySize(f)
	d.evict(n)
	if n > d.max {
		return
	}
	d.dyn = append(d.dyn, f)
	d.size += n
}

// evict drops the oldest entries until room more bytes fit.
func (d *Decoder) evict(room int) {
	k := 0
	for k < len(d.dyn) && d.size+room > d.max {
		d.size -= entrySize(d.dyn[k])
		k++
	}
	if k > 0 {
		n := copy(d.dyn, d.dyn[k:])
		clear(d.dyn[n:])
		d.dyn = d.dyn[:n]
	}
}

// readInt reads an integer of an n-bit prefix from the start of b.
func readInt(b []byte, n uint) (uint64, []byte, error) {
	max := uint64(1)<<n - 1
	v := uint64(b[0]) & max
	b = b[1:]
	if v < max {
		return v, b, nil
	}
	for m := uint(0); m <= 28; m += 7 { // values up to 2^35: plenty for any length or index
		if len(b) == 0 {
			return 0, nil, errCorrupt
		}
		c := b[0]
		b = b[1:]
		v += uint64(c&127) << m
		if c&128 == 0 {
			return v, b, nil
		}
	}
	return 0, nil, errCorrupt
}

// readString reads a string literal (RFC 7541, 5.2).
func (d *Decoder) readString(b []byte) (string, []byte, error) {
	if len(b) == 0 {
		return "", nil, errCorrupt
	}
	huff := b[0]&0x80 != 0
	n, b, err := readInt(b, 7)
	if err != nil {
		return "", nil, err
	}
	if n > uint64(len(b)) {
		return "", nil, errCorrupt
	}
	raw := b[:n]
	b = b[n:]
	if !huff {
		if d.maxString > 0 && len(raw) > d.maxString {
			return "", nil, ErrStringLength
		}
		return string(raw), b, nil
	}
	s, err := huffmanDecode(raw, d.maxString)
	return s, b, err
}
