package control

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/microlink-go/microlink/internal/netmap/netmaptest"
	"github.com/microlink-go/microlink/internal/tailcfg"
)

func frame(b []byte) []byte {
	out := binary.LittleEndian.AppendUint32(nil, uint32(len(b)))
	return append(out, b...)
}

// zframe frames s compressed as control compresses it: one zstd frame of a
// single segment, at the fastest level.
func zframe(t testing.TB, s string) []byte {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithSingleSegment(true),
		zstd.WithZeroFrames(true), zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderCRC(true))
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	return frame(enc.EncodeAll([]byte(s), nil))
}

func TestMessageReader(t *testing.T) {
	m := newMessageReader(1 << 10)
	defer m.close()
	msgs := []string{`{"KeepAlive":true}`, `{"Node":{"ID":1}}`, strings.Repeat(" ", 5000) + `{"Domain":"x"}`,
		`{"Peers":[{"ID":2,"Name":"a.ts.net."}]}`}
	var stream []byte
	for _, s := range msgs {
		stream = append(stream, zframe(t, s)...)
	}
	m.reset(bytes.NewReader(stream), true)
	for _, want := range msgs {
		got, err := m.next()
		if err != nil {
			t.Fatalf("%.40q: %v", want, err)
		}
		var resp tailcfg.MapResponse
		json.Unmarshal([]byte(want), &resp)
		resp.Peers = nil
		if !reflect.DeepEqual(got.MapResponse, &resp) {
			t.Fatalf("got %+v, want %+v", got.MapResponse, &resp)
		}
	}
	if _, err := m.next(); err != io.EOF {
		t.Fatalf("end: %v", err)
	}

	m.reset(bytes.NewReader(frame([]byte(`{"Domain":"raw"}`))), false)
	if got, err := m.next(); err != nil || got.Domain != "raw" {
		t.Fatalf("uncompressed: %+v %v", got, err)
	}
}

func TestMessageReaderRejects(t *testing.T) {
	m := newMessageReader(1 << 10)
	defer m.close()
	big := zframe(t, `{"Domain":"`+strings.Repeat("a", 100<<10)+`"}`) // compresses small, decodes past 8 KiB
	two := zframe(t, `{}`)
	for name, in := range map[string][]byte{
		"zero":          {0, 0, 0, 0},
		"oversize":      binary.LittleEndian.AppendUint32(nil, 1<<10+1),
		"truncated":     zframe(t, "{}")[:6],
		"short header":  {1, 0},
		"not zstd":      frame([]byte("{}")),
		"bomb":          big,
		"bad JSON":      zframe(t, `{"Domain":`),
		"two objects":   zframe(t, `{} {}`),
		"trailing junk": frame(append(two[4:], 1, 2, 3)),
		"cut short":     frame(two[4 : len(two)-2]),
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
	// A reader that fails in the middle of a message: the error is the
	// reader's.
	boom := errors.New("boom")
	whole := zframe(t, `{"Domain":"`+strings.Repeat("b", 4000)+`"}`)
	m.reset(io.MultiReader(bytes.NewReader(whole[:len(whole)/2]), iotest.ErrReader(boom)), true)
	if _, err := m.next(); !errors.Is(err, boom) {
		t.Errorf("read error: %v", err)
	}
	// After all that, the reader still works.
	m.reset(bytes.NewReader(zframe(t, `{"Domain":"ok"}`)), true)
	if got, err := m.next(); err != nil || got.Domain != "ok" {
		t.Fatalf("after errors: %+v %v", got, err)
	}
}

// TestMessageReaderKeepAliveAllocs: a keep-alive costs a few allocations
// (its decoded MapResponse), not buffers.
func TestMessageReaderKeepAliveAllocs(t *testing.T) {
	m := newMessageReader(1 << 20)
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
	if allocs > 12 {
		t.Fatalf("a keep-alive costs %v allocations", allocs)
	}
}

// TestMessageReaderReleasesWindow: the decompression window of a large
// netmap is not kept once the netmap is decoded.
func TestMessageReaderReleasesWindow(t *testing.T) {
	m := newMessageReader(DefaultMaxMessageSize)
	defer m.close()
	big := zframe(t, string(netmaptest.Netmap(3000))) // about 2 MB of JSON
	base := netmaptest.LiveHeap()
	m.reset(bytes.NewReader(big), true)
	if _, err := m.next(); err != nil {
		t.Fatal(err)
	}
	kept := int64(netmaptest.LiveHeap()) - int64(base)
	runtime.KeepAlive(big)
	if kept > 256<<10 {
		t.Fatalf("the reader keeps %d bytes after a large message", kept)
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

// FuzzReadMessage feeds arbitrary map streams to the message reader, and
// the messages it decodes through the handling that runs for every one.
func FuzzReadMessage(f *testing.F) {
	f.Add(zframe(f, `{"KeepAlive":true}`), true)
	f.Add(append(zframe(f, `{"Node":{"ID":1}}`), zframe(f, `{}`)...), true)
	f.Add(frame([]byte(`{"Peers":[]}`)), false)
	f.Add(frame([]byte(`{"KeepAlive":true,"PingRequest":{"URL":"","Types":"c2n","Payload":"R0VUIC8gSFRUUC8xLjENCg0K"}}`)), false)
	f.Add(frame([]byte(`{"Node":{"ID":1,"Key":"nodekey:`+strings.Repeat("0", 64)+`","KeyExpiry":"2030-01-01T00:00:00Z"},"ControlTime":"2020-01-01T00:00:00Z"}`)), false)
	f.Add(frame([]byte(`{"Peers":[{"ID":2,"Addresses":["100.64.0.2/32"],"Endpoints":["1.2.3.4:5"]}],"DERPMap":{"Regions":{"1":null}}}`)), false)
	f.Add([]byte{0, 0, 0, 0}, true)
	f.Add([]byte{0xff, 0xff, 0xff, 0xff}, true)
	c := &Client{}
	c.log = discardLogger()
	f.Fuzz(func(t *testing.T, stream []byte, compressed bool) {
		m := newMessageReader(64 << 10)
		defer m.close()
		m.reset(bytes.NewReader(stream), compressed)
		for range 100 {
			resp, err := m.next()
			if err != nil {
				return
			}
			if resp.PingRequest != nil {
				resp.PingRequest.URL = "" // not answered: no network in fuzzing
			}
			c.handleHousekeeping(resp.MapResponse)
			if resp.Node != nil {
				c.rotateAt(resp.Node.KeyExpiry)
			}
			if pr := resp.PingRequest; pr != nil && pr.Types == "c2n" {
				answerC2N(pr.Payload)
			}
		}
	})
}
