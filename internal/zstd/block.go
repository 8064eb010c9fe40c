package zstd

import "encoding/binary"

// Literal lengths, match lengths: the baseline and the number of extra
// bits of each code (RFC 8878, 3.1.1.3.2.1).
var (
	llBase = [36]uint32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
		16, 18, 20, 22, 24, 28, 32, 40, 48, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536}
	llBits = [36]uint8{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
		1, 1, 1, 1, 2, 2, 3, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	mlBase = [53]uint32{3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18,
		19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34,
		35, 37, 39, 41, 43, 47, 51, 59, 67, 83, 99, 131, 259, 515, 1027, 2051, 4099, 8195, 16387, 32771, 65539}
	mlBits = [53]uint8{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
		1, 1, 1, 1, 2, 2, 3, 3, 4, 4, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
)

// The predefined distributions of the three sequence codes (RFC 8878,
// 3.1.1.3.2.2).
var (
	llDefault = []int16{4, 3, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1,
		2, 2, 2, 2, 2, 2, 2, 2, 2, 3, 2, 1, 1, 1, 1, 1, -1, -1, -1, -1}
	mlDefault = []int16{1, 4, 3, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1,
		1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
		1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, -1, -1, -1, -1, -1, -1, -1}
	ofDefault = []int16{1, 1, 1, 1, 1, 1, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1,
		1, 1, 1, 1, 1, 1, 1, 1, -1, -1, -1, -1, -1}
)

// seqTable is one of the three tables of a block's sequences and whether a
// later block may repeat it.
type seqTable struct {
	fseTable
	ok bool
}

// decodeBlock decodes a compressed block (RFC 8878, 3.1.1.3), appending its
// content to d.hist.
func (d *Decoder) decodeBlock(in []byte) error {
	lits, in, err := d.literals(in)
	if err != nil {
		return err
	}
	return d.sequences(in, lits)
}

// literals decodes the literals section and returns the literals and the
// rest of the block.
func (d *Decoder) literals(in []byte) (lits, rest []byte, err error) {
	if len(in) == 0 {
		return nil, nil, errCorrupt
	}
	b0 := int(in[0])
	kind, format := b0&3, b0>>2&3
	if kind < 2 { // raw or RLE
		var size, hl int
		switch format {
		case 0, 2:
			size, hl = b0>>3, 1
		case 1:
			if len(in) < 2 {
				return nil, nil, errCorrupt
			}
			size, hl = b0>>4|int(in[1])<<4, 2
		case 3:
			if len(in) < 3 {
				return nil, nil, errCorrupt
			}
			size, hl = b0>>4|int(in[1])<<4|int(in[2])<<12, 3
		}
		if size > maxBlock {
			return nil, nil, errCorrupt
		}
		if kind == 0 {
			if len(in) < hl+size {
				return nil, nil, errCorrupt
			}
			return in[hl : hl+size], in[hl+size:], nil
		}
		if len(in) < hl+1 {
			return nil, nil, errCorrupt
		}
		lits = d.litBuf(size)
		for i := range lits {
			lits[i] = in[hl]
		}
		return lits, in[hl+1:], nil
	}
	// Huffman-coded, with a new tree or the last one.
	streams, hl := 4, 3+format-1
	if format == 0 {
		streams, hl = 1, 3
	} else if format == 1 {
		hl = 3
	}
	if len(in) < hl {
		return nil, nil, errCorrupt
	}
	var size, csize int
	switch hl {
	case 3:
		h := int(in[0]) | int(in[1])<<8 | int(in[2])<<16
		size, csize = h>>4&0x3ff, h>>14
	case 4: // (in uint32: an int of 32 bits would make the top bits negative)
		h := binary.LittleEndian.Uint32(in)
		size, csize = int(h>>4&0x3fff), int(h>>18)
	case 5:
		h := binary.LittleEndian.Uint32(in)
		size, csize = int(h>>4&0x3ffff), int(h>>22)|int(in[4])<<10
	}
	if size > maxBlock || len(in) < hl+csize {
		return nil, nil, errCorrupt
	}
	rest = in[hl+csize:]
	in = in[hl : hl+csize]
	if kind == 2 {
		n, err := d.huff.read(in, &d.scratch)
		if err != nil {
			return nil, nil, err
		}
		d.haveHuff = true
		in = in[n:]
	} else if !d.haveHuff {
		return nil, nil, errCorrupt
	}
	lits = d.litBuf(size)
	if streams == 1 {
		return lits, rest, d.huff.decode(lits, in)
	}
	if len(in) < 6 {
		return nil, nil, errCorrupt
	}
	var streams4 [4][]byte
	total := 0
	for i := 0; i < 3; i++ {
		n := int(binary.LittleEndian.Uint16(in[2*i:]))
		streams4[i] = in[6+total:]
		total += n
		if 6+total > len(in) {
			return nil, nil, errCorrupt
		}
		streams4[i] = streams4[i][:n]
	}
	streams4[3] = in[6+total:]
	if 3*((size+3)/4) > size {
		return nil, nil, errCorrupt
	}
	return lits, rest, d.huff.decode4(lits, &streams4)
}

func (d *Decoder) litBuf(n int) []byte {
	if cap(d.lits) < n {
		d.lits = make([]byte, n, max(n, 1<<10))
	}
	return d.lits[:n]
}

// sequences decodes the sequences section and executes the sequences,
// appending the block's content to d.hist.
func (d *Decoder) sequences(in, lits []byte) error {
	if len(in) == 0 {
		return errCorrupt
	}
	nseq := int(in[0])
	switch {
	case nseq == 0:
		if len(in) != 1 {
			return errCorrupt
		}
		return d.emit(lits)
	case nseq < 128:
		in = in[1:]
	case nseq < 255:
		if len(in) < 2 {
			return errCorrupt
		}
		nseq = (nseq-128)<<8 | int(in[1])
		in = in[2:]
	default:
		if len(in) < 3 {
			return errCorrupt
		}
		nseq = int(in[1]) | int(in[2])<<8 + 0x7f00
		in = in[3:]
	}
	if len(in) == 0 || in[0]&3 != 0 {
		return errCorrupt
	}
	modes := in[0]
	in = in[1:]
	for i, t := range [3]struct {
		tab    *seqTable
		def    []int16
		maxSym int
		maxLog uint8
	}{{&d.ll, llDefault, 35, 9}, {&d.of, ofDefault, 31, 8}, {&d.ml, mlDefault, 52, 9}} {
		switch modes >> (6 - 2*i) & 3 {
		case 0: // predefined
			if err := t.tab.build(t.def, 6-uint8(i&1)); err != nil {
				return err
			}
		case 1: // RLE
			if len(in) == 0 || int(in[0]) > t.maxSym {
				return errCorrupt
			}
			t.tab.rle(in[0])
			in = in[1:]
		case 2: // FSE
			var norm [256]int16
			nsym, log, n, err := readCounts(in, &norm, t.maxSym, t.maxLog)
			if err != nil {
				return err
			}
			if err := t.tab.build(norm[:nsym], log); err != nil {
				return err
			}
			in = in[n:]
		case 3: // repeat
			if !t.tab.ok {
				return errCorrupt
			}
		}
		t.tab.ok = true
	}
	var br backReader
	if err := br.init(in); err != nil {
		return err
	}
	ll, of, ml := &d.ll.fseTable, &d.of.fseTable, &d.ml.fseTable
	sll, sof, sml := br.get(ll.log), br.get(of.log), br.get(ml.log)
	for i := 0; i < nseq; i++ {
		el, eo, em := ll.e[sll], of.e[sof], ml.e[sml]
		if eo.sym > 31 {
			return errCorrupt
		}
		br.fill()
		ofv := int(uint32(1)<<eo.sym + br.get(eo.sym)) // negative past 2 GiB on 32-bit: rejected
		br.fill()
		mlen := int(mlBase[em.sym]) + int(br.get(mlBits[em.sym]))
		llen := int(llBase[el.sym]) + int(br.get(llBits[el.sym]))
		var off int
		if ofv > 3 || ofv < 0 {
			off = ofv - 3
			d.rep[2], d.rep[1], d.rep[0] = d.rep[1], d.rep[0], off
		} else {
			if llen == 0 {
				ofv++
			}
			switch ofv {
			case 1:
				off = d.rep[0]
			case 2:
				off = d.rep[1]
				d.rep[1], d.rep[0] = d.rep[0], off
			default:
				if ofv == 3 {
					off = d.rep[2]
				} else {
					off = d.rep[0] - 1
				}
				d.rep[2], d.rep[1], d.rep[0] = d.rep[1], d.rep[0], off
			}
		}
		if i != nseq-1 {
			br.fill()
			sll = uint32(el.base) + br.get(el.nb)
			sml = uint32(em.base) + br.get(em.nb)
			sof = uint32(eo.base) + br.get(eo.nb)
		}
		if llen > len(lits) {
			return errCorrupt
		}
		if err := d.emit(lits[:llen]); err != nil {
			return err
		}
		lits = lits[llen:]
		if err := d.match(off, mlen); err != nil {
			return err
		}
	}
	if !br.finished() {
		return errCorrupt
	}
	return d.emit(lits)
}

// emit appends literals to the block's content.
func (d *Decoder) emit(b []byte) error {
	if len(d.hist)-d.blockStart+len(b) > d.blockMax {
		return errCorrupt
	}
	d.hist = append(d.hist, b...)
	return nil
}

// match appends n bytes copied from off bytes back.
func (d *Decoder) match(off, n int) error {
	if off <= 0 || off > len(d.hist) || off > d.window || len(d.hist)-d.blockStart+n > d.blockMax {
		return errCorrupt
	}
	start := len(d.hist) - off
	if off >= n {
		d.hist = append(d.hist, d.hist[start:start+n]...)
		return nil
	}
	for n > 0 { // overlapping: copy what exists, which doubles each time
		m := min(n, len(d.hist)-start)
		d.hist = append(d.hist, d.hist[start:start+m]...)
		n -= m
	}
	return nil
}
