package h2

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2/hpack"
)

// rawServer is the server end of a connection driven frame by frame.
type rawServer struct {
	t  *testing.T
	c  net.Conn
	fr framer
}

func newRaw(t *testing.T) (*ClientConn, *rawServer) {
	t.Helper()
	return newRawOpts(t, nil)
}

// newRawOpts is newRaw with the client's options.
func newRawOpts(t *testing.T, opts *Options) (*ClientConn, *rawServer) {
	t.Helper()
	checkGoroutines(t)
	a, b := net.Pipe()
	srv := &rawServer{t: t, c: b, fr: framer{r: bufio.NewReader(b), maxRead: maxAllowedFrame}}
	type result struct {
		cc  *ClientConn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		cc, err := NewClientConn(a, opts)
		ch <- result{cc, err}
	}()
	preface := make([]byte, len(clientPreface))
	if _, err := io.ReadFull(srv.fr.r, preface); err != nil || string(preface) != clientPreface {
		t.Fatalf("preface %q, %v", preface, err)
	}
	h, _ := srv.read()
	if h.typ != frameSettings {
		t.Fatalf("first frame %d", h.typ)
	}
	h, _ = srv.read()
	if h.typ != frameWindowUpdate {
		t.Fatalf("second frame %d", h.typ)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() {
		r.cc.Close()
		b.Close()
	})
	srv.write(frameSettings, 0, 0, nil)
	if h, _ := srv.read(); h.typ != frameSettings || !h.has(flagAck) {
		t.Fatalf("want SETTINGS ACK, got %d", h.typ)
	}
	return r.cc, srv
}

func (s *rawServer) write(typ, flags uint8, id uint32, p []byte) {
	s.t.Helper()
	s.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := s.c.Write(append(appendFrameHeader(nil, len(p), typ, flags, id), p...)); err != nil {
		s.t.Fatalf("server write: %v", err)
	}
}

func (s *rawServer) read() (frameHeader, []byte) {
	s.t.Helper()
	s.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	h, p, err := s.fr.readFrame()
	if err != nil {
		s.t.Fatalf("server read: %v", err)
	}
	return h, append([]byte(nil), p...)
}

// readType skips frames until one of type typ.
func (s *rawServer) readType(typ uint8) (frameHeader, []byte) {
	s.t.Helper()
	for {
		h, p := s.read()
		if h.typ == typ {
			return h, p
		}
	}
}

func headerBlock(fields ...string) []byte {
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	for i := 0; i+1 < len(fields); i += 2 {
		enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return buf.Bytes()
}

type rtResult struct {
	res *Response
	err error
}

func startRT(cc *ClientConn, ctx context.Context, path string) chan rtResult {
	ch := make(chan rtResult, 1)
	go func() {
		res, err := cc.RoundTrip(ctx, get(path))
		ch <- rtResult{res, err}
	}()
	return ch
}

func wait(t *testing.T, ch chan rtResult) rtResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("RoundTrip did not return")
		return rtResult{}
	}
}

func TestGoAway(t *testing.T) {
	cc, srv := newRaw(t)
	ctx := context.Background()
	r1 := startRT(cc, ctx, "/1")
	h1, _ := srv.readType(frameHeaders)
	r3 := startRT(cc, ctx, "/3")
	h3, _ := srv.readType(frameHeaders)
	if h1.streamID != 1 || h3.streamID != 3 || !h1.has(flagEndStream|flagEndHeaders) {
		t.Fatalf("streams %d, %d, flags %x", h1.streamID, h3.streamID, h1.flags)
	}
	srv.write(frameGoAway, 0, 0, []byte{0, 0, 0, 1, 0, 0, 0, 0})
	if r := wait(t, r3); !errors.Is(r.err, ErrNotProcessed) {
		t.Fatalf("stream 3 after GOAWAY: %v", r.err)
	}
	if cc.CanTakeNewRequest() {
		t.Fatal("new requests allowed after GOAWAY")
	}
	if _, err := cc.RoundTrip(ctx, get("/5")); !errors.Is(err, ErrNotProcessed) {
		t.Fatalf("new request after GOAWAY: %v", err)
	}
	// Stream 1 still completes; then the connection closes.
	srv.write(frameHeaders, flagEndHeaders, 1, headerBlock(":status", "200"))
	srv.write(frameData, flagEndStream, 1, []byte("one"))
	r := wait(t, r1)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if got := readAll(t, r.res); got != "one" {
		t.Fatalf("body %q", got)
	}
	select {
	case <-cc.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("connection not closed after its last stream")
	}
}

func TestServerPing(t *testing.T) {
	cc, srv := newRaw(t)
	srv.write(framePing, 0, 0, []byte("12345678"))
	h, p := srv.readType(framePing)
	if !h.has(flagAck) || string(p) != "12345678" {
		t.Fatalf("ping reply flags %x %q", h.flags, p)
	}
	// Informational responses, CONTINUATION and padding.
	r := startRT(cc, context.Background(), "/")
	srv.readType(frameHeaders)
	srv.write(frameHeaders, flagEndHeaders, 1, headerBlock(":status", "103", "link", "x"))
	blk := headerBlock(":status", "404", "x-a", "1", "x-b", "2")
	srv.write(frameHeaders, 0, 1, blk[:3])
	srv.write(frameContinuation, flagEndHeaders, 1, blk[3:])
	srv.write(frameData, flagPadded, 1, append([]byte{4}, "body...."...))
	srv.write(frameData, flagEndStream, 1, nil)
	res := wait(t, r)
	if res.err != nil || res.res.Status != 404 || res.res.Header.Get("X-B") != "2" {
		t.Fatalf("%+v", res)
	}
	if got := readAll(t, res.res); got != "body" {
		t.Fatalf("body %q", got)
	}
}

func TestStreamReset(t *testing.T) {
	cc, srv := newRaw(t)
	r := startRT(cc, context.Background(), "/")
	srv.readType(frameHeaders)
	srv.write(frameRSTStream, 0, 1, []byte{0, 0, 0, byte(ErrCodeRefusedStream)})
	if res := wait(t, r); !errors.Is(res.err, ErrNotProcessed) {
		t.Fatalf("refused: %v", res.err)
	}
	r = startRT(cc, context.Background(), "/")
	srv.readType(frameHeaders)
	srv.write(frameHeaders, flagEndHeaders, 3, headerBlock(":status", "200"))
	res := wait(t, r)
	if res.err != nil {
		t.Fatal(res.err)
	}
	srv.write(frameData, 0, 3, []byte("part"))
	srv.write(frameRSTStream, 0, 3, []byte{0, 0, 0, byte(ErrCodeInternal)})
	_, err := io.ReadAll(res.res.Body)
	var se StreamError
	if !errors.As(err, &se) || se.Code != ErrCodeInternal {
		t.Fatalf("body after reset: %v", err)
	}
	// Bad :status: the stream is reset, the connection lives.
	r = startRT(cc, context.Background(), "/")
	srv.readType(frameHeaders)
	srv.write(frameHeaders, flagEndHeaders|flagEndStream, 5, headerBlock(":status", "abc"))
	if res := wait(t, r); res.err == nil {
		t.Fatal("bad status accepted")
	}
	if h, p := srv.readType(frameRSTStream); h.streamID != 5 || p[3] != byte(ErrCodeProtocol) {
		t.Fatalf("reset %d %v", h.streamID, p)
	}
	if !cc.CanTakeNewRequest() {
		t.Fatal("connection died of a stream error")
	}
}

func TestBadFrames(t *testing.T) {
	for name, frame := range map[string][]byte{
		"data on stream 0":      appendFrameHeader(nil, 0, frameData, 0, 0),
		"data on idle stream":   appendFrameHeader(nil, 0, frameData, 0, 9),
		"too large":             appendFrameHeader(nil, 1<<20, frameData, 0, 1),
		"bad hpack":             append(appendFrameHeader(nil, 2, frameHeaders, flagEndHeaders, 1), 0xff, 0xff),
		"push promise":          append(appendFrameHeader(nil, 4, framePushPromise, flagEndHeaders, 1), 0, 0, 0, 2),
		"short settings":        append(appendFrameHeader(nil, 3, frameSettings, 0, 0), 0, 1, 0),
		"bad padding":           append(appendFrameHeader(nil, 2, frameData, flagPadded, 1), 9, 0),
		"continuation alone":    appendFrameHeader(nil, 0, frameContinuation, flagEndHeaders, 1),
		"zero window update":    append(appendFrameHeader(nil, 4, frameWindowUpdate, 0, 0), 0, 0, 0, 0),
		"window overflow":       append(appendFrameHeader(nil, 4, frameWindowUpdate, 0, 0), 0x7f, 0xff, 0xff, 0xff),
		"ping on stream":        append(appendFrameHeader(nil, 8, framePing, 0, 1), make([]byte, 8)...),
		"bad max frame setting": append(appendFrameHeader(nil, 6, frameSettings, 0, 0), 0, 5, 0, 0, 0, 1),
		"flow control":          append(appendFrameHeader(nil, 16384, frameData, 0, 1), make([]byte, 16384)...),
	} {
		t.Run(name, func(t *testing.T) {
			cc, srv := newRaw(t)
			r := startRT(cc, context.Background(), "/")
			srv.readType(frameHeaders)
			srv.write(frameHeaders, flagEndHeaders, 1, headerBlock(":status", "200"))
			res := wait(t, r)
			if res.err != nil {
				t.Fatal(res.err)
			}
			go io.Copy(io.Discard, srv.c)
			if name == "flow control" {
				// Exceed the 1 MiB stream window before reading.
				for range 70 {
					srv.c.Write(frame)
				}
			} else {
				go srv.c.Write(frame)
			}
			_, err := io.ReadAll(res.res.Body)
			if err == nil {
				t.Fatal("body read succeeded")
			}
			if name != "flow control" {
				select {
				case <-cc.Done():
				case <-time.After(5 * time.Second):
					t.Fatal("connection survived")
				}
			}
		})
	}
}
