package control

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

func frame(b []byte) []byte {
	out := binary.LittleEndian.AppendUint32(nil, uint32(len(b)))
	return append(out, b...)
}

func zframe(t testing.TB, s string) []byte {
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	return frame(enc.EncodeAll([]byte(s), nil))
}

func TestMessageReader(t *testing.T) {
	m, err := newMessageReader(1 << 10)
	if err != nil {
		t.Fatal(err)
	}
	defer m.close()
	msgs := []string{`{"KeepAlive":true}`, `{"Node":{"ID":1}}`, strings.Repeat(" ", 5000) + `{}`}
	var stream []byte
	for _, s := range msgs {
		stream = append(stream, zframe(t, s)...)
	}
	m.reset(bytes.NewReader(stream), true)
	for _, want := range msgs {
		got, err := m.next()
		if err != nil || string(got) != want {
			t.Fatalf("got %.40q, %v; want %.40q", got, err, want)
		}
	}
	if _, err := m.next(); err != io.EOF {
		t.Fatalf("end: %v", err)
	}

	m.reset(bytes.NewReader(frame([]byte(`{"raw":1}`))), false)
	if got, err := m.next(); err != nil || string(got) != `{"raw":1}` {
		t.Fatalf("uncompressed: %q %v", got, err)
	}
}

func TestMessageReaderRejects(t *testing.T) {
	m, _ := newMessageReader(1 << 10)
	defer m.close()
	big := zframe(t, strings.Repeat("a", 100<<10)) // compresses small, decodes past 8 KiB
	for name, in := range map[string][]byte{
		"zero":      {0, 0, 0, 0},
		"oversize":  binary.LittleEndian.AppendUint32(nil, 1<<10+1),
		"truncated": zframe(t, "{}")[:6],
		"not zstd":  frame([]byte("{}")),
		"bomb":      big,
	} {
		m.reset(bytes.NewReader(in), true)
		if _, err := m.next(); err == nil || err == io.EOF {
			t.Errorf("%s: err %v", name, err)
		}
	}
	m.reset(bytes.NewReader([]byte{0, 0, 0, 0}), true)
	if _, err := m.next(); !errors.Is(err, errZeroMessage) {
		t.Errorf("zero: %v", err)
	}
}

func TestMessageReaderNoAllocs(t *testing.T) {
	m, _ := newMessageReader(1 << 20)
	defer m.close()
	one := zframe(t, `{"KeepAlive":true}`)
	r := bytes.NewReader(nil)
	m.reset(r, true)
	allocs := testing.AllocsPerRun(100, func() {
		r.Reset(one)
		if _, err := m.next(); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 0 {
		t.Fatalf("next allocates %v times per message", allocs)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		v        string
		min, max time.Duration
	}{
		{"3", 3 * time.Second, 3 * time.Second},
		{"120", 2 * time.Minute, 2 * time.Minute},
		{"1800", maxRetryAfter, maxRetryAfter},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, 90 * time.Second},
		{"", 5 * time.Second, 10 * time.Second},
		{"0", 5 * time.Second, 10 * time.Second},
		{"-5", 5 * time.Second, 10 * time.Second},
		{"7200", 5 * time.Second, 10 * time.Second},
		{"99999999999999999999", 5 * time.Second, 10 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 5 * time.Second, 10 * time.Second},
		{"soon", 5 * time.Second, 10 * time.Second},
		{"Thursday, 01-Jan-26 00:01:00 GMT", time.Minute, time.Minute},
		{"Thu Jan  1 00:02:00 2026", 2 * time.Minute, 2 * time.Minute},
		{" Thu, 01 Jan 2026 00:00:30 GMT ", 30 * time.Second, 30 * time.Second},
		{"Thu, 01 Jan 2026 00:00:30 PST", 5 * time.Second, 10 * time.Second},
	} {
		if got := parseRetryAfter(tc.v, now); got < tc.min || got > tc.max {
			t.Errorf("parseRetryAfter(%q) = %v, want [%v, %v]", tc.v, got, tc.min, tc.max)
		}
	}
}

func TestBackoff(t *testing.T) {
	var b backoff
	prevMax := time.Duration(0)
	for i := range 12 {
		d := b.next()
		limit := min(minBackoff<<i, maxBackoff)
		if d < limit/2 || d >= limit {
			t.Fatalf("attempt %d: %v not in [%v, %v)", i, d, limit/2, limit)
		}
		prevMax = max(prevMax, d)
	}
	if prevMax < maxBackoff/2 {
		t.Fatalf("never reached the cap: %v", prevMax)
	}
	b.reset()
	if d := b.next(); d >= minBackoff {
		t.Fatalf("after reset: %v", d)
	}
}

// FuzzReadMessage feeds arbitrary map streams to the message reader.
func FuzzReadMessage(f *testing.F) {
	f.Add(zframe(f, `{"KeepAlive":true}`), true)
	f.Add(append(zframe(f, `{"Node":{"ID":1}}`), zframe(f, `{}`)...), true)
	f.Add(frame([]byte(`{"Peers":[]}`)), false)
	f.Add([]byte{0, 0, 0, 0}, true)
	f.Add([]byte{0xff, 0xff, 0xff, 0xff}, true)
	f.Fuzz(func(t *testing.T, stream []byte, compressed bool) {
		m, err := newMessageReader(64 << 10)
		if err != nil {
			t.Fatal(err)
		}
		defer m.close()
		m.reset(bytes.NewReader(stream), compressed)
		for range 100 {
			b, err := m.next()
			if err != nil {
				return
			}
			if len(b) > m.maxDecoded {
				t.Fatalf("message of %d bytes past the limit", len(b))
			}
			decodeMapResponse(b)
		}
	})
}

// FuzzDecodeMapResponse feeds arbitrary JSON through the decode path and
// the handling that runs for every message.
func FuzzDecodeMapResponse(f *testing.F) {
	f.Add([]byte(`{"KeepAlive":true,"PingRequest":{"URL":"","Types":"c2n","Payload":"R0VUIC8gSFRUUC8xLjENCg0K"}}`))
	f.Add([]byte(`{"Node":{"ID":1,"Key":"nodekey:` + strings.Repeat("0", 64) + `","KeyExpiry":"2030-01-01T00:00:00Z"},"ControlTime":"2020-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"Peers":[{"ID":2,"Addresses":["100.64.0.2/32"],"Endpoints":["1.2.3.4:5"]}],"DERPMap":{"Regions":{"1":null}}}`))
	f.Add([]byte(`null`))
	c := &Client{}
	c.log = discardLogger()
	f.Fuzz(func(t *testing.T, b []byte) {
		resp, err := decodeMapResponse(b)
		if err != nil {
			return
		}
		if resp.PingRequest != nil {
			resp.PingRequest.URL = "" // not answered: no network in fuzzing
		}
		c.handleHousekeeping(resp)
		if resp.Node != nil {
			c.rotateAt(resp.Node.KeyExpiry)
		}
		if pr := resp.PingRequest; pr != nil && pr.Types == "c2n" {
			answerC2N(pr.Payload)
		}
	})
}
