package h2

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// FuzzFrames feeds arbitrary bytes to a ClientConn as the server's side
// of the connection while a request is in flight: any outcome but a panic
// or a hang is fine.
func FuzzFrames(f *testing.F) {
	settings := appendFrameHeader(nil, 0, frameSettings, 0, 0)
	hdrs := func(flags uint8, id uint32, fields ...string) []byte {
		blk := headerBlock(fields...)
		return append(appendFrameHeader(nil, len(blk), frameHeaders, flags, id), blk...)
	}
	frame := func(typ, flags uint8, id uint32, p string) []byte {
		return append(appendFrameHeader(nil, len(p), typ, flags, id), p...)
	}
	cat := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	f.Add(settings)
	f.Add(cat(settings, hdrs(flagEndHeaders, 1, ":status", "200", "a", "b"), frame(frameData, flagEndStream, 1, "hi")))
	f.Add(cat(settings, hdrs(flagEndHeaders|flagEndStream, 1, ":status", "204")))
	f.Add(cat(settings, hdrs(flagPadded|flagPriority, 1, ":status", "200"), frame(frameContinuation, flagEndHeaders, 1, "")))
	f.Add(cat(settings, frame(framePing, 0, 0, "abcdefgh"), frame(frameGoAway, 0, 0, "\x00\x00\x00\x00\x00\x00\x00\x00dbg")))
	f.Add(cat(frame(frameSettings, 0, 0, "\x00\x04\x00\x00\x00\x00\x00\x05\x00\x00\x40\x00"), frame(frameWindowUpdate, 0, 1, "\x00\x00\x01\x00")))
	f.Add(cat(settings, hdrs(flagEndHeaders, 1, ":status", "200"), frame(frameData, flagPadded, 1, "\x02ab"), frame(frameRSTStream, 0, 1, "\x00\x00\x00\x02")))
	f.Add(cat(settings, hdrs(flagEndHeaders, 1, ":status", "100"), hdrs(flagEndHeaders, 1, ":status", "200"), hdrs(flagEndHeaders|flagEndStream, 1, "trailer", "x")))
	f.Fuzz(func(t *testing.T, in []byte) {
		a, b := net.Pipe()
		defer b.Close()
		go io.Copy(io.Discard, b)
		go func() {
			b.Write(in)
			b.Close()
		}()
		cc, err := NewClientConn(a, &Options{StreamWindow: 1 << 16})
		if err != nil {
			return
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		res, err := cc.RoundTrip(ctx, &Request{Method: "POST", Path: "/", Body: strings.NewReader("body")})
		if err != nil {
			return
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if ctx.Err() != nil {
			t.Fatal("hung until the deadline")
		}
	})
}
