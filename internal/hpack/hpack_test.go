package hpack

import (
	"bytes"
	"encoding/hex"
	"math/rand"
	"reflect"
	"strings"
	"testing"

	xhpack "golang.org/x/net/http2/hpack"
)

func unhex(t testing.TB, s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRFC7541 decodes the request examples of RFC 7541, C.3 (literals)
// and C.4 (Huffman-coded): three blocks on one connection, the later ones
// indexing what the earlier ones added to the dynamic table.
func TestRFC7541(t *testing.T) {
	want := [][]HeaderField{
		{{":method", "GET"}, {":scheme", "http"}, {":path", "/"}, {":authority", "www.example.com"}},
		{{":method", "GET"}, {":scheme", "http"}, {":path", "/"}, {":authority", "www.example.com"}, {"cache-control", "no-cache"}},
		{{":method", "GET"}, {":scheme", "https"}, {":path", "/index.html"}, {":authority", "www.example.com"}, {"custom-key", "custom-value"}},
	}
	for name, blocks := range map[string][]string{
		"C.3": {
			"8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
			"8286 84be 5808 6e6f 2d63 6163 6865",
			"8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
		},
		"C.4": {
			"8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
			"8286 84be 5886 a8eb 1064 9cbf",
			"8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
		},
	} {
		d := NewDecoder(4096)
		for i, b := range blocks {
			got, err := d.DecodeFull(unhex(t, b))
			if err != nil || !reflect.DeepEqual(got, want[i]) {
				t.Fatalf("%s block %d: %v %v", name, i+1, got, err)
			}
		}
		if d.size != 164 {
			t.Fatalf("%s: dynamic table of %d bytes, want 164", name, d.size)
		}
	}
}

// TestHuffman decodes what x/net's encoder makes of random strings, of
// every byte value, and refuses bad padding and EOS.
func TestHuffman(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	for i := 0; i < 2000; i++ {
		b := make([]byte, r.Intn(40))
		for j := range b {
			if i%2 == 0 {
				b[j] = byte(r.Intn(256))
			} else {
				b[j] = "abcdefghijklmnopqrstuvwxyz0123456789-./:"[r.Intn(40)]
			}
		}
		enc := xhpack.AppendHuffmanString(nil, string(b))
		got, err := huffmanDecode(enc, 0)
		if err != nil || got != string(b) {
			t.Fatalf("%q: %q %v", b, got, err)
		}
	}
	for _, bad := range []string{
		"ff",          // 8 bits of padding
		"00",          // padding not all ones
		"ffff ffff",   // EOS
		"1f ff ff ff", // a code past the longest
	} {
		if _, err := huffmanDecode(unhex(t, bad), 0); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
	if _, err := huffmanDecode(xhpack.AppendHuffmanString(nil, "abcdef"), 5); err != ErrStringLength {
		t.Errorf("over the length limit: %v", err)
	}
}

// TestMatchesXNet decodes header blocks that x/net's encoder makes (with
// indexing, Huffman coding, eviction and table size updates) and checks
// that x/net's decoder reads what AppendField makes.
func TestMatchesXNet(t *testing.T) {
	r := rand.New(rand.NewSource(2))
	names := []string{":status", "content-type", "date", "server", "x-custom", "set-cookie", "cache-control", "x-long"}
	var buf bytes.Buffer
	enc := xhpack.NewEncoder(&buf)
	dec := NewDecoder(4096)
	for i := 0; i < 500; i++ {
		if i%50 == 10 {
			size := uint32(r.Intn(4097))
			enc.SetMaxDynamicTableSize(size)
		}
		var fields []HeaderField
		for n := r.Intn(8); n >= 0; n-- {
			v := strings.Repeat(string(rune('a'+r.Intn(26))), r.Intn(3)) + string(rune('0'+r.Intn(10)))
			if r.Intn(10) == 0 {
				v = strings.Repeat("v", r.Intn(3000))
			}
			fields = append(fields, HeaderField{names[r.Intn(len(names))], v})
		}
		buf.Reset()
		for _, f := range fields {
			enc.WriteField(xhpack.HeaderField{Name: f.Name, Value: f.Value, Sensitive: r.Intn(8) == 0})
		}
		got, err := dec.DecodeFull(buf.Bytes())
		if err != nil || !reflect.DeepEqual(got, fields) {
			t.Fatalf("block %d: %v\n got %v\nwant %v", i, err, got, fields)
		}
	}

	var block []byte
	fields := []HeaderField{{":method", "POST"}, {":path", "/machine/map"}, {"content-length", "1234"}, {"x", strings.Repeat("y", 300)}, {"", ""}}
	for _, f := range fields {
		block = AppendField(block, f)
	}
	xfields, err := xhpack.NewDecoder(4096, nil).DecodeFull(block)
	if err != nil || len(xfields) != len(fields) {
		t.Fatalf("x/net's decoder: %v %v", xfields, err)
	}
	for i, f := range xfields {
		if f.Name != fields[i].Name || f.Value != fields[i].Value {
			t.Fatalf("field %d: %v, want %v", i, f, fields[i])
		}
	}
}

// TestRejects: malformed blocks are errors, never panics.
func TestRejects(t *testing.T) {
	for _, bad := range []string{
		"80",                   // index 0
		"be",                   // index 62 with an empty dynamic table
		"ff ff ff ff ff ff ff", // an integer too long
		"40 05 61",             // a name shorter than its length
		"41",                   // no value
		"3f e2 1f",             // a table size over 4096
		"82 20",                // a table size update after a field
		"00 81 ff 00",          // a Huffman name of bad padding
	} {
		if got, err := NewDecoder(4096).DecodeFull(unhex(t, bad)); err == nil {
			t.Errorf("%s: %v, no error", bad, got)
		}
	}
	d := NewDecoder(4096)
	d.SetMaxStringLength(4)
	if _, err := d.DecodeFull(AppendField(nil, HeaderField{"name", "value"})); err != ErrStringLength {
		t.Errorf("over the string limit: %v", err)
	}
}

// FuzzDecode: on arbitrary blocks the decoder never panics, keeps its
// dynamic table within its size, and accepts only what x/net's decoder
// accepts, with the same fields.
func FuzzDecode(f *testing.F) {
	f.Add(unhex(f, "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"))
	f.Add(unhex(f, "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65"))
	f.Add(unhex(f, "3fe1 1f82 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf be"))
	f.Fuzz(func(t *testing.T, b []byte) {
		d := NewDecoder(4096)
		d.SetMaxStringLength(1 << 10)
		x := xhpack.NewDecoder(4096, nil)
		x.SetMaxStringLength(1 << 10)
		for _, block := range bytes.SplitN(b, []byte{0xfe, 0xfe}, 3) {
			got, err := d.DecodeFull(block)
			if d.size > d.max {
				t.Fatalf("dynamic table of %d bytes, max %d", d.size, d.max)
			}
			if err != nil {
				return
			}
			want, xerr := x.DecodeFull(block)
			if xerr != nil {
				t.Fatalf("accepted %x, which x/net refuses: %v", block, xerr)
			}
			if len(got) != len(want) {
				t.Fatalf("%d fields, x/net %d", len(got), len(want))
			}
			for i := range got {
				if got[i].Name != want[i].Name || got[i].Value != want[i].Value {
					t.Fatalf("field %d: %v, x/net %v", i, got[i], want[i])
				}
			}
		}
	})
}
