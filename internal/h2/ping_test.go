package h2

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"
)

// pingCounter reads the client's frames in the background, answering
// PINGs if ack is set, and counts the PINGs.
type pingCounter struct {
	pings chan []byte
}

func (s *rawServer) countPings(ack bool) *pingCounter {
	pc := &pingCounter{pings: make(chan []byte, 100)}
	go func() {
		for {
			s.c.SetReadDeadline(time.Time{})
			h, p, err := s.fr.readFrame()
			if err != nil {
				close(pc.pings)
				return
			}
			if h.typ != framePing || h.has(flagAck) {
				continue
			}
			pc.pings <- append([]byte(nil), p...)
			if ack {
				s.c.Write(append(appendFrameHeader(nil, 8, framePing, flagAck, 0), p...))
			}
		}
	}()
	return pc
}

// openPoll starts a request on stream 1 and has the server answer its
// headers, as a map poll's.
func openPoll(t *testing.T, cc *ClientConn, srv *rawServer) rtResult {
	t.Helper()
	r := startRT(cc, context.Background(), "/poll")
	srv.readType(frameHeaders)
	srv.write(frameHeaders, flagEndHeaders, 1, headerBlock(":status", "200"))
	res := wait(t, r)
	if res.err != nil {
		t.Fatal(res.err)
	}
	return res
}

// TestPingDetectsSilentServer: a server that stops sending (a black hole)
// is found out by the PING after the idle time; the open request fails with
// a PingTimeoutError and the connection dies.
func TestPingDetectsSilentServer(t *testing.T) {
	cc, srv := newRawOpts(t, &Options{ReadIdleTimeout: 100 * time.Millisecond, PingTimeout: 150 * time.Millisecond})
	res := openPoll(t, cc, srv)
	start := time.Now()
	pc := srv.countPings(false)
	_, err := io.ReadAll(res.res.Body)
	took := time.Since(start)
	var pe PingTimeoutError
	if !errors.As(err, &pe) {
		t.Fatalf("body read ended with %v, want a PingTimeoutError", err)
	}
	if took < 200*time.Millisecond || took > 3*time.Second {
		t.Fatalf("silence noticed after %v, want about 250ms", took)
	}
	if len(pc.pings) == 0 {
		t.Fatal("no PING sent")
	}
	select {
	case <-cc.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("connection survived")
	}
	if _, err := cc.RoundTrip(context.Background(), get("/")); err == nil {
		t.Fatal("new request on the dead connection succeeded")
	}
}

// TestPingKeepsAnsweringServer: a quiet server that answers PINGs keeps the
// connection and the open request alive for many idle periods.
func TestPingKeepsAnsweringServer(t *testing.T) {
	cc, srv := newRawOpts(t, &Options{ReadIdleTimeout: 50 * time.Millisecond, PingTimeout: 500 * time.Millisecond})
	res := openPoll(t, cc, srv)
	pc := srv.countPings(true)
	var got [][]byte
	for len(got) < 4 {
		select {
		case p := <-pc.pings:
			got = append(got, p)
		case <-time.After(5 * time.Second):
			t.Fatalf("%d PINGs in 5s", len(got))
		}
	}
	if string(got[0]) == string(got[1]) {
		t.Errorf("two PINGs carry the same payload %x", got[0])
	}
	if !cc.CanTakeNewRequest() {
		t.Fatalf("connection died: %v", cc.Err())
	}
	srv.write(frameData, flagEndStream, 1, []byte("done"))
	if b, err := io.ReadAll(res.res.Body); err != nil || string(b) != "done" {
		t.Fatalf("body %q, %v", b, err)
	}
}

// TestNoPingWhenIdle: a connection without requests is not pinged, and one
// whose server keeps sending is not either.
func TestNoPingWhenIdle(t *testing.T) {
	// The idle time is long next to the server's 10 ms between frames, so
	// that a busy machine's scheduling cannot look like silence.
	cc, srv := newRawOpts(t, &Options{ReadIdleTimeout: 200 * time.Millisecond, PingTimeout: time.Second})
	pc := srv.countPings(false)
	time.Sleep(700 * time.Millisecond)
	if n := len(pc.pings); n != 0 {
		t.Fatalf("%d PINGs on an idle connection", n)
	}
	if !cc.CanTakeNewRequest() {
		t.Fatalf("idle connection died: %v", cc.Err())
	}

	// A busy stream whose server sends every 10 ms needs no PING, even
	// though the connection was quiet before the request.
	r := startRT(cc, context.Background(), "/stream")
	time.Sleep(10 * time.Millisecond) // the server's reader sees the HEADERS
	srv.write(frameHeaders, flagEndHeaders, 1, headerBlock(":status", "200"))
	res := wait(t, r)
	if res.err != nil {
		t.Fatal(res.err)
	}
	go io.Copy(io.Discard, res.res.Body)
	for range 70 {
		srv.write(frameData, 0, 1, []byte("x"))
		time.Sleep(10 * time.Millisecond)
	}
	if n := len(pc.pings); n != 0 {
		t.Fatalf("%d PINGs while the server was sending", n)
	}
	srv.write(frameData, flagEndStream, 1, nil)
}
