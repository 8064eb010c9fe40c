package ts2021

import (
	"bytes"
	"encoding/binary"
	"testing"
)

func earlyFrame(payload string) []byte {
	b := make([]byte, 9, 9+len(payload))
	copy(b, EarlyPayloadMagic)
	binary.BigEndian.PutUint32(b[5:], uint32(len(payload)))
	return append(b, payload...)
}

func TestReadEarly(t *testing.T) {
	var buf [9]byte
	h2 := []byte("\x00\x00\x12\x04\x00\x00\x00\x00\x00rest")
	pre, ep, err := readEarly(bytes.NewReader(h2), &buf)
	if err != nil || ep != nil || !bytes.Equal(pre, h2[:9]) {
		t.Fatalf("http2 start: %q %v %v", pre, ep, err)
	}
	r := bytes.NewReader(append(earlyFrame(`{"nodeKeyChallenge":"chalpub:ab"}`), "PRI"...))
	pre, ep, err = readEarly(r, &buf)
	if err != nil || pre != nil || ep == nil || ep.NodeKeyChallenge != "chalpub:ab" {
		t.Fatalf("early: %q %v %v", pre, ep, err)
	}
	if rest := r.Len(); rest != 3 {
		t.Fatalf("consumed wrong amount, %d left", rest)
	}
	for _, bad := range [][]byte{
		earlyFrame("{"),
		earlyFrame(`{"nodeKeyChallenge":1}`)[:12],
		append([]byte(EarlyPayloadMagic), 0, 0xa0, 0, 1),
		[]byte("short"),
	} {
		if _, _, err := readEarly(bytes.NewReader(bad), &buf); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func FuzzReadEarly(f *testing.F) {
	f.Add(earlyFrame(`{"nodeKeyChallenge":"chalpub:00"}`))
	f.Add([]byte("\x00\x00\x12\x04\x00\x00\x00\x00\x00"))
	f.Add(earlyFrame("null"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var buf [9]byte
		pre, ep, err := readEarly(bytes.NewReader(b), &buf)
		if err == nil && pre == nil && ep == nil {
			t.Fatal("no result and no error")
		}
		if pre != nil && !bytes.HasPrefix(b, pre) {
			t.Fatal("prefix is not the input")
		}
	})
}

func TestParseServerKey(t *testing.T) {
	if _, err := parseServerKey([]byte("{")); err == nil {
		t.Fatal("bad JSON accepted")
	}
}
