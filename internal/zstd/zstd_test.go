package zstd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand"
	"strings"
	"sync"
	"testing"
	"testing/iotest"

	kzstd "github.com/klauspost/compress/zstd"

	"github.com/microlink-go/microlink/internal/netmap/netmaptest"
)

// compress encodes b with klauspost's encoder, the reference here, at the
// given level, in one segment or in blocks of a 64 KiB window.
func compress(t testing.TB, b []byte, level kzstd.EncoderLevel, single, crc bool) []byte {
	k := encKey{level, single, crc}
	encMu.Lock()
	defer encMu.Unlock()
	enc := encoders[k]
	if enc == nil {
		opts := []kzstd.EOption{kzstd.WithEncoderConcurrency(1), kzstd.WithEncoderLevel(level),
			kzstd.WithSingleSegment(single), kzstd.WithEncoderCRC(crc), kzstd.WithZeroFrames(true)}
		if !single {
			opts = append(opts, kzstd.WithWindowSize(64<<10))
		}
		var err error
		if enc, err = kzstd.NewWriter(nil, opts...); err != nil {
			t.Fatal(err)
		}
		encoders[k] = enc
	}
	return enc.EncodeAll(b, nil)
}

type encKey struct {
	level       kzstd.EncoderLevel
	single, crc bool
}

var (
	encMu    sync.Mutex
	encoders = map[encKey]*kzstd.Encoder{}
)

// reference decodes in with klauspost's decoder.
func reference(in []byte, max int) ([]byte, error) {
	dec, err := kzstd.NewReader(bytes.NewReader(in), kzstd.WithDecoderConcurrency(1),
		kzstd.WithDecoderLowmem(true), kzstd.WithDecoderMaxMemory(uint64(max)), kzstd.WithDecoderMaxWindow(uint64(max)))
	if err != nil {
		return nil, err
	}
	defer dec.Close()
	return io.ReadAll(dec)
}

func decode(in []byte, max int) ([]byte, error) {
	d := NewReader(max)
	d.Reset(bytes.NewReader(in))
	return io.ReadAll(d)
}

// corpus is text of the kind control compresses: JSON with repeated keys
// and values, and some incompressible bytes.
func corpus(n int, seed int64) []byte {
	r := rand.New(rand.NewSource(seed))
	var b bytes.Buffer
	words := []string{`"ID":`, `"Name":"`, `.ts.net."`, `"Addresses":["100.64.`, `"/32"]`, `"DERP":"127.3.3.40:`, `{"Peers":[`, `},{`, `"Endpoints":["`, `"Online":true`}
	for b.Len() < n {
		switch r.Intn(4) {
		case 0:
			b.WriteString(strings.Repeat("x", r.Intn(300)))
		case 1:
			for i := r.Intn(20); i > 0; i-- {
				b.WriteByte(byte(r.Intn(256)))
			}
		default:
			b.WriteString(words[r.Intn(len(words))])
			b.WriteString(string(rune('a' + r.Intn(26))))
		}
	}
	return b.Bytes()[:n]
}

func TestDecodeMatchesReference(t *testing.T) {
	levels := []kzstd.EncoderLevel{kzstd.SpeedFastest, kzstd.SpeedDefault, kzstd.SpeedBetterCompression, kzstd.SpeedBestCompression}
	var inputs [][]byte
	for _, size := range []int{0, 1, 5, 100, 1000, 5000, 70000, 200000, 1 << 20} {
		inputs = append(inputs, corpus(size, int64(size)))
	}
	// Runs of one byte (RLE blocks and literals), incompressible bytes (raw
	// blocks), and small alphabets (Huffman trees of few weights).
	r := rand.New(rand.NewSource(1))
	inputs = append(inputs, bytes.Repeat([]byte{'a'}, 300000), append(bytes.Repeat([]byte{0}, 200000), corpus(5000, 9)...))
	for _, alphabet := range []int{2, 3, 16, 40, 256} {
		b := make([]byte, 150000)
		for i := range b {
			b[i] = byte(r.Intn(alphabet))
		}
		inputs = append(inputs, b)
	}
	for _, in := range inputs {
		size := len(in)
		for _, level := range levels {
			for _, single := range []bool{true, false} {
				for _, crc := range []bool{true, false} {
					z := compress(t, in, level, single, crc)
					got, err := decode(z, 8<<20)
					if err != nil {
						t.Fatalf("size %d level %v single %v crc %v: %v", size, level, single, crc, err)
					}
					if !bytes.Equal(got, in) {
						t.Fatalf("size %d level %v single %v crc %v: content differs", size, level, single, crc)
					}
				}
			}
		}
	}
}

// TestCorruptChecksum: a frame whose content checksum does not match is an
// error, as is a content size other than the header's.
func TestCorruptChecksum(t *testing.T) {
	z := compress(t, corpus(5000, 1), kzstd.SpeedDefault, true, true)
	z[len(z)-1] ^= 1
	if _, err := decode(z, 1<<20); !errors.Is(err, errChecksum) {
		t.Fatalf("bad checksum: %v", err)
	}
	raw := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x20, 5, 1, 0, 0, 'a'} // says 5 bytes, has 1 raw byte
	if _, err := decode(raw, 1<<20); !errors.Is(err, errSize) {
		t.Fatalf("content size: %v", err)
	}
}

func TestXXH64(t *testing.T) {
	var x xxh64
	x.reset()
	if got := x.sum(); got != 0xef46db3751d8e999 {
		t.Fatalf("xxh64(\"\") = %x", got)
	}
	// Written whole or in pieces, the sum is the same.
	b := corpus(1000, 2)
	x.write(b)
	whole := x.sum()
	x.reset()
	for i := 0; i < len(b); i += 7 {
		x.write(b[i:min(i+7, len(b))])
	}
	if x.sum() != whole {
		t.Fatal("sums of pieces differ")
	}
}

func TestFrames(t *testing.T) {
	a, b := corpus(3000, 3), corpus(100, 4)
	skip := binary.LittleEndian.AppendUint32(nil, skipMagic+3)
	skip = binary.LittleEndian.AppendUint32(skip, 5)
	skip = append(skip, 1, 2, 3, 4, 5)
	stream := append(compress(t, a, kzstd.SpeedDefault, true, true), skip...)
	stream = append(stream, compress(t, b, kzstd.SpeedFastest, false, false)...)
	got, err := decode(stream, 1<<20)
	if err != nil || !bytes.Equal(got, append(append([]byte{}, a...), b...)) {
		t.Fatalf("two frames and a skippable one: %v", err)
	}
	// Read one byte at a time.
	d := NewReader(1 << 20)
	d.Reset(iotest.OneByteReader(bytes.NewReader(stream)))
	got, err = io.ReadAll(iotest.OneByteReader(d))
	if err != nil || len(got) != len(a)+len(b) {
		t.Fatalf("byte by byte: %d bytes, %v", len(got), err)
	}
	// Every truncation is an unexpected EOF, except at a frame boundary.
	whole := compress(t, a, kzstd.SpeedDefault, true, true)
	for i := 1; i < len(whole); i++ {
		if _, err := decode(whole[:i], 1<<20); err != io.ErrUnexpectedEOF {
			t.Fatalf("cut at %d of %d: %v", i, len(whole), err)
		}
	}
	if _, err := decode([]byte(`{"Domain":"x"}`), 1<<20); !errors.Is(err, ErrMagic) {
		t.Fatalf("not zstd: %v", err)
	}
}

func TestWindowLimit(t *testing.T) {
	in := corpus(100000, 5)
	if _, err := decode(compress(t, in, kzstd.SpeedDefault, true, false), 99999); !errors.Is(err, ErrWindowTooLarge) {
		t.Fatalf("single segment over the limit: %v", err)
	}
	if _, err := decode(compress(t, in, kzstd.SpeedDefault, false, false), 32<<10); !errors.Is(err, ErrWindowTooLarge) {
		t.Fatalf("window over the limit: %v", err)
	}
	// A window of 64 KiB, content of 1 MiB: the decoder slides, holding
	// about a window and a few blocks.
	big := corpus(1<<20, 6)
	d := NewReader(64 << 10)
	d.Reset(bytes.NewReader(compress(t, big, kzstd.SpeedBetterCompression, false, true)))
	got, err := io.ReadAll(d)
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("sliding window: %v", err)
	}
	if c := cap(d.hist); c > 64<<10+2*maxBlock {
		t.Fatalf("history buffer of %d bytes for a 64 KiB window", c)
	}
}

// TestReuseAllocs: with its buffers grown, a decoder decodes another small
// frame without allocating.
func TestReuseAllocs(t *testing.T) {
	z := compress(t, []byte(`{"KeepAlive":true,"Peers":[{"ID":1},{"ID":1},{"ID":1}]}`), kzstd.SpeedFastest, true, true)
	d := NewReader(1 << 20)
	r := bytes.NewReader(z)
	var buf [512]byte
	allocs := testing.AllocsPerRun(100, func() {
		r.Reset(z)
		d.Reset(r)
		for {
			if _, err := d.Read(buf[:]); err == io.EOF {
				break
			} else if err != nil {
				t.Fatal(err)
			}
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per frame", allocs)
	}
}

// FuzzDecode compares the decoder with klauspost's on arbitrary input:
// both accept it with the same content, or both reject it; and the
// decoder never holds more than its window and a block or two.
func FuzzDecode(f *testing.F) {
	for i, size := range []int{0, 10, 300, 5000, 70000} {
		in := corpus(size, int64(i))
		f.Add(compress(f, in, kzstd.SpeedFastest, true, true))
		f.Add(compress(f, in, kzstd.SpeedBestCompression, false, false))
		f.Add(compress(f, in, kzstd.SpeedDefault, true, false))
	}
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd, 0x20, 8, 60, 0, 0, 0x42, 0xc0, 0x00, 0x80, 0x10, 0x16, 0, 45, 0, 0, 0x43, 0x40, 0x00, 0x19, 0})
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd, 0x20, 10, 29, 0, 0, 0x51, 'z', 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		const max = 1 << 20
		want, werr := reference(in, max)
		d := NewReader(max)
		d.Reset(bytes.NewReader(in))
		got, err := io.ReadAll(d)
		// The memory held: the window, a quarter of it (or a block) of
		// slack, and the block being decoded.
		if c := cap(d.hist); c > max+max/4+maxBlock || cap(d.in) > maxBlock || cap(d.lits) > maxBlock {
			t.Fatalf("buffers of %d, %d and %d bytes for a window of %d", c, cap(d.in), cap(d.lits), max)
		}
		if (err == nil) != (werr == nil) {
			t.Fatalf("error %v, reference %v", err, werr)
		}
		if err == nil && !bytes.Equal(got, want) {
			t.Fatalf("content differs: %d bytes, reference %d", len(got), len(want))
		}
	})
}

// FuzzRoundTrip decodes what klauspost's encoder makes of arbitrary
// content, at each level.
func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte(`{"KeepAlive":true}`), uint8(0))
	f.Add(corpus(3000, 1), uint8(2))
	f.Add(bytes.Repeat([]byte("abc"), 1000), uint8(5))
	f.Fuzz(func(t *testing.T, in []byte, mode uint8) {
		level := kzstd.EncoderLevel(1 + mode%4)
		z := compress(t, in, level, mode&4 != 0, mode&8 != 0)
		got, err := decode(z, 1<<20)
		if err != nil || !bytes.Equal(got, in) {
			t.Fatalf("level %v: %v", level, err)
		}
	})
}

// BenchmarkDecode decodes a netmap of 20,000 peers (14 MB of JSON),
// compressed as control compresses it, with this decoder and with
// klauspost's.
func BenchmarkDecode(b *testing.B) {
	in := netmaptest.Netmap(20000)
	z := compress(b, in, kzstd.SpeedFastest, true, false)
	r := bytes.NewReader(z)
	b.Run("microlink", func(b *testing.B) {
		b.SetBytes(int64(len(in)))
		d := NewReader(64 << 20)
		for b.Loop() {
			r.Reset(z)
			d.Reset(r)
			if _, err := io.Copy(io.Discard, d); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("klauspost", func(b *testing.B) {
		b.SetBytes(int64(len(in)))
		d, _ := kzstd.NewReader(nil, kzstd.WithDecoderConcurrency(1), kzstd.WithDecoderLowmem(true))
		defer d.Close()
		for b.Loop() {
			r.Reset(z)
			d.Reset(r)
			if _, err := io.Copy(io.Discard, d); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestHandmadeFrames decodes frames that the reference encoder does not
// make: RLE literals, blocks without sequences, 4-bit Huffman weights and
// a block that reuses the previous block's Huffman tree. Both decoders
// must agree with the expected content.
func TestHandmadeFrames(t *testing.T) {
	hdr := func(fcs byte) []byte { return []byte{0x28, 0xb5, 0x2f, 0xfd, 0x20, fcs} }
	for _, tc := range []struct {
		name  string
		frame []byte
		want  []byte
	}{
		{"RLE literals", append(hdr(10), 29, 0, 0, 0x51, 'z', 0), bytes.Repeat([]byte("z"), 10)},
		{"cut short", append(hdr(3), 29, 0, 0, 0x18, 'a', 'b', 'c', 0)[:13], nil},
		{"treeless", append(hdr(8),
			60, 0, 0, 0x42, 0xc0, 0x00, 0x80, 0x10, 0x16, 0, // weights 1,1: 0,1,1,0
			45, 0, 0, 0x43, 0x40, 0x00, 0x19, 0), // the same tree: 1,0,0,1
			[]byte{0, 1, 1, 0, 1, 0, 0, 1}},
		{"treeless first", append(hdr(4), 45, 0, 0, 0x43, 0x40, 0x00, 0x19, 0), nil},
		{"RLE block", append(hdr(200), 1|1<<1|200<<3&0xff, 200>>5, 0, 'q'), bytes.Repeat([]byte("q"), 200)},
	} {
		got, err := decode(tc.frame, 1<<20)
		ref, rerr := reference(tc.frame, 1<<20)
		if tc.want == nil {
			if err == nil || rerr == nil {
				t.Errorf("%s: error %v, reference %v; want errors", tc.name, err, rerr)
			}
			continue
		}
		if err != nil || !bytes.Equal(got, tc.want) {
			t.Errorf("%s: %v %q", tc.name, err, got)
		}
		if rerr != nil || !bytes.Equal(ref, tc.want) {
			t.Errorf("%s: reference: %v %q", tc.name, rerr, ref)
		}
	}
}
