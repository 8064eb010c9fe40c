package derp

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microlink-go/microlink/internal/key"
)

// TestOversizedFramesSkipped: frames larger than any packet are read
// through without being buffered whole; a Health frame's problem is cut
// to MaxProblemLen, and the connection goes on.
func TestOversizedFramesSkipped(t *testing.T) {
	src := key.NewPrivate().NodePublic()
	var in []byte
	in = appendFrame(in, frameHealth, []byte(strings.Repeat("p", maxFrameSize)))
	in = appendFrame(in, frameRecvPacket, append(src[:], make([]byte, MaxPacketSize+1)...))
	in = appendFrame(in, frameServerInfo, make([]byte, 200<<10))
	in = appendFrame(in, frameRecvPacket, append(src[:], "after"...))
	c := newBytesClient(string(in))
	m, err := c.Recv()
	if err != nil {
		t.Fatal(err)
	}
	h, ok := m.(Health)
	if !ok || len(h.Problem) != MaxProblemLen || strings.Trim(h.Problem, "p") != "" {
		t.Fatalf("got %T with a problem of %d bytes, want Health cut to %d", m, len(h.Problem), MaxProblemLen)
	}
	m, err = c.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if rp, ok := m.(*ReceivedPacket); !ok || string(rp.Data) != "after" {
		t.Fatalf("got %+v, want the packet after the oversized frames", m)
	}
	if cap(c.rbuf) > keyLen+MaxPacketSize {
		t.Fatalf("client keeps a %d-byte read buffer", cap(c.rbuf))
	}
}

// logRecorder is a slog.Handler that keeps the messages it is given.
type logRecorder struct {
	mu   sync.Mutex
	msgs []slog.Record
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	l.msgs = append(l.msgs, r)
	l.mu.Unlock()
	return nil
}
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecorder) WithGroup(string) slog.Handler      { return l }

// problems returns the problems of the health logs so far.
func (l *logRecorder) problems() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, r := range l.msgs {
		if !strings.Contains(r.Message, "problem") {
			continue
		}
		p := "<none>"
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "problem" {
				p = a.Value.String()
			}
			return true
		})
		out = append(out, p)
	}
	return out
}

// TestRegionsHealthLoggedOnChange: a server repeating its health frames
// is logged once per change of problem, not per frame.
func TestRegionsHealthLoggedOnChange(t *testing.T) {
	rec := &logRecorder{}
	f := newFakeRegions(t)
	f.log = slog.New(rec)
	f.SetHome(1)
	s := f.nextServer(t, 1)
	s.expectPreferred(t, true)
	for range 50 {
		s.send(t, frameHealth, []byte("overloaded"))
	}
	s.send(t, frameHealth, []byte(strings.Repeat("x", 100<<10)))
	s.send(t, frameHealth, nil)
	s.send(t, frameHealth, nil)
	s.send(t, frameHealth, []byte("overloaded"))
	peer := key.NewPrivate().NodePublic()
	s.deliver(t, peer, "done")
	<-f.received
	time.Sleep(10 * time.Millisecond)
	got := rec.problems()
	if len(got) != 4 || got[0] != "overloaded" || len(got[1]) > MaxProblemLen || got[3] != "overloaded" {
		t.Fatalf("health logs %d: %.80q", len(got), got)
	}
}

// TestRegionsRoutesBounded: packets from ever new source keys leave a
// bounded table of reverse routes, holding only peers when IsPeer says
// which keys are peers.
func TestRegionsRoutesBounded(t *testing.T) {
	routes := func(f *fakeRegions) int {
		f.Regions.mu.Lock()
		defer f.Regions.mu.Unlock()
		return len(f.routes)
	}
	flood := func(f *fakeRegions, peer key.NodePublic) {
		f.SetHome(1)
		s := f.nextServer(t, 1)
		s.expectPreferred(t, true)
		var frames []byte
		for i := range maxRoutes + 500 {
			var src key.NodePublic
			rand.Read(src[:])
			if i == 7 {
				src = peer
			}
			frames = appendFrame(frames, frameRecvPacket, append(src[:], 'x'))
		}
		if _, err := s.conn.Write(frames); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "every packet", func() bool { return len(f.received) == maxRoutes+500 })
	}
	peer := key.NewPrivate().NodePublic()
	f := newFakeRegions(t)
	f.received = make(chan receivedPacket, maxRoutes+500)
	flood(f, peer)
	if n := routes(f); n > maxRoutes {
		t.Fatalf("%d routes kept, want at most %d", n, maxRoutes)
	}

	g := newFakeRegions(t)
	g.received = make(chan receivedPacket, maxRoutes+500)
	g.opts.IsPeer = func(k key.NodePublic) bool { return k == peer }
	flood(g, peer)
	if n := routes(g); n != 1 || g.Send(0, peer, []byte("x")) != nil {
		t.Fatalf("%d routes kept for one peer", n)
	}
}

// TestRegionsSendNeverBlocks: Send returns at once even when a region's
// server stops reading, dropping what its bounded queue cannot hold, so
// that no caller (the UDP reader, another region's reader, the WireGuard
// timers) waits on a relay's TCP connection; other regions carry on.
func TestRegionsSendNeverBlocks(t *testing.T) {
	f := newFakeRegions(t)
	f.SetHome(1)
	s1 := f.nextServer(t, 1) // never read again: its TCP buffers fill
	waitFor(t, "home connected", func() bool { return f.Connected(1) })
	peer := key.NewPrivate().NodePublic()
	pkt := make([]byte, 1280)
	full := 0
	start := time.Now()
	for i := 0; i < 20000 && full < 100; i++ {
		t0 := time.Now()
		err := f.Send(1, peer, pkt)
		if d := time.Since(t0); d > time.Second {
			t.Fatalf("Send blocked for %v", d)
		}
		if errors.Is(err, ErrQueueFull) {
			full++
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if full == 0 {
		t.Fatalf("25 MB sent in %v to a server that reads nothing, none dropped", time.Since(start))
	}
	// Region 2 still carries packets both ways.
	f.Send(2, peer, []byte("other region"))
	s2 := f.nextServer(t, 2)
	s2.expectPacket(t, peer, "other region")
	s2.deliver(t, peer, "back")
	select {
	case got := <-f.received:
		if got.data != "back" {
			t.Fatalf("received %+v", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("region 2 stalled")
	}
	f.Regions.mu.Lock()
	q := len(f.conns[1].queue)
	f.Regions.mu.Unlock()
	if q > sendQueueLen {
		t.Fatalf("%d packets queued for region 1", q)
	}
	s1.conn.Close()
}
