package tcp

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"
)

// fastConfig has short timers so that failures show quickly.
func fastConfig() Config {
	return Config{MinRTO: 50 * time.Millisecond, MaxRTO: time.Second, TimeWait: 100 * time.Millisecond, FinWait2Timeout: time.Second}
}

func dial(t testing.TB, s *Stack, src netip.Addr, dst netip.AddrPort) *Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := s.Dial(ctx, src, dst)
	if err != nil {
		t.Fatalf("dial %v: %v", dst, err)
	}
	return c
}

func accept(t testing.TB, l *Listener) *Conn {
	t.Helper()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() { c, err := l.Accept(); ch <- res{c, err} }()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("accept: %v", r.err)
		}
		return r.c.(*Conn)
	case <-time.After(5 * time.Second):
		l.Close()
		t.Fatal("accept timed out")
	}
	return nil
}

// connect returns a connection from src on a to dst on b and its peer.
func connect(t testing.TB, a, b *Stack, src, dst netip.Addr, port uint16) (client, server *Conn) {
	t.Helper()
	l, err := b.Listen(port)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	client = dial(t, a, src, netip.AddrPortFrom(dst, port))
	server = accept(t, l)
	return client, server
}

func TestHandshakeBothWaysBothFamilies(t *testing.T) {
	a, b, _ := pair(t, fastConfig(), impairments{})
	cases := []struct {
		name     string
		from, to *Stack
		src, dst netip.Addr
	}{
		{"A to B v4", a, b, addrA4, addrB4},
		{"B to A v4", b, a, addrB4, addrA4},
		{"A to B v6", a, b, addrA6, addrB6},
		{"B to A v6", b, a, addrB6, addrA6},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, s := connect(t, tc.from, tc.to, tc.src, tc.dst, 80)
			if got := s.RemoteAddr().(*net.TCPAddr).AddrPort(); got != c.id.local {
				t.Fatalf("server sees %v, client is %v", got, c.id.local)
			}
			wantMSS := 1240
			if tc.src.Is6() {
				wantMSS = 1220
			}
			if c.mss != wantMSS || s.mss != wantMSS {
				t.Fatalf("mss %d/%d, want %d", c.mss, s.mss, wantMSS)
			}
			if c.sndShift != 7 || s.sndShift != 7 {
				t.Fatalf("window scale %d/%d, want 7 for windows of up to 4 MiB", c.sndShift, s.sndShift)
			}
			// With scaling, each side may have more than 64 KiB in flight.
			s.mu.Lock()
			wnd := s.sndWnd
			s.mu.Unlock()
			if wnd <= 0xffff {
				t.Fatalf("send window %d, want the peer's 64 KiB", wnd)
			}
			c.Write([]byte("ping"))
			buf := make([]byte, 10)
			if n, err := io.ReadFull(s, buf[:4]); err != nil || string(buf[:n]) != "ping" {
				t.Fatalf("server read %q %v", buf[:n], err)
			}
			s.Write([]byte("pong"))
			if n, err := io.ReadFull(c, buf[:4]); err != nil || string(buf[:n]) != "pong" {
				t.Fatalf("client read %q %v", buf[:n], err)
			}
			c.Close()
			if n, err := s.Read(buf); err != io.EOF {
				t.Fatalf("server read after client close: %d %v", n, err)
			}
			s.Close()
		})
	}
}

// transfer sends size random bytes each way at once and checks their
// sha256 sums.
func transfer(t *testing.T, c, s *Conn, size int) time.Duration {
	t.Helper()
	start := time.Now()
	errc := make(chan error, 4)
	sums := make(chan [32]byte, 4)
	send := func(w *Conn, seed uint64) {
		r := rand.New(rand.NewPCG(seed, seed))
		buf := make([]byte, 32<<10)
		h := sha256.New()
		for left := size; left > 0; {
			n := min(left, len(buf))
			for i := range buf[:n] {
				buf[i] = byte(r.Uint32())
			}
			h.Write(buf[:n])
			if _, err := w.Write(buf[:n]); err != nil {
				errc <- err
				return
			}
			left -= n
		}
		errc <- w.CloseWrite()
		sums <- [32]byte(h.Sum(nil))
	}
	recv := func(r *Conn) {
		h := sha256.New()
		n, err := io.Copy(h, r)
		if err == nil && n != int64(size) {
			err = errors.New("short transfer")
		}
		errc <- err
		sums <- [32]byte(h.Sum(nil))
	}
	c.SetDeadline(time.Now().Add(60 * time.Second))
	s.SetDeadline(time.Now().Add(60 * time.Second))
	go send(c, 1)
	go send(s, 2)
	go recv(c)
	go recv(s)
	for range 4 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	got := map[[32]byte]int{}
	for range 4 {
		got[<-sums]++
	}
	if len(got) != 2 {
		t.Fatalf("checksums differ: %d distinct, want 2", len(got))
	}
	return time.Since(start)
}

func TestTransferClean(t *testing.T) {
	a, b, _ := pair(t, fastConfig(), impairments{})
	c, s := connect(t, a, b, addrA4, addrB4, 80)
	const size = 8 << 20
	d := transfer(t, c, s, size)
	t.Logf("%d MiB each way in %v: %.1f MB/s each way", size>>20, d, float64(size)/d.Seconds()/1e6)
	c.Close()
	s.Close()
}

func TestTransferLossyReordered(t *testing.T) {
	for _, fam := range []struct{ src, dst netip.Addr }{{addrA4, addrB4}, {addrA6, addrB6}} {
		t.Run(fam.src.String(), func(t *testing.T) {
			a, b, l := pair(t, fastConfig(), impairments{})
			c, s := connect(t, a, b, fam.src, fam.dst, 80)
			l.setImpairments(impairments{loss: 0.05, dup: 0.01, delay: time.Millisecond, jitter: 2 * time.Millisecond})
			const size = 1 << 20
			d := transfer(t, c, s, size)
			st := a.Stats()
			t.Logf("%d MiB each way under 5%% loss in %v, %d retransmits by A, %d timeouts", size>>20, d, st.Retransmits, st.Timeouts)
			if st.Retransmits == 0 {
				t.Fatal("no retransmissions under loss")
			}
			c.Close()
			s.Close()
		})
	}
}

func TestHalfClose(t *testing.T) {
	a, b, _ := pair(t, fastConfig(), impairments{})
	c, s := connect(t, a, b, addrA4, addrB4, 80)
	c.Write([]byte("request"))
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("x")); err == nil {
		t.Fatal("write after CloseWrite succeeded")
	}
	req, err := io.ReadAll(s)
	if err != nil || string(req) != "request" {
		t.Fatalf("server read %q %v", req, err)
	}
	// The server can still answer after the client's FIN.
	s.Write([]byte("response"))
	s.Close()
	resp, err := io.ReadAll(c)
	if err != nil || string(resp) != "response" {
		t.Fatalf("client read %q %v", resp, err)
	}
	c.Close()
	waitConns(t, a, 0)
	waitConns(t, b, 0)
}

// waitConns waits until s has n connections in any state.
func waitConns(t *testing.T, s *Stack, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for s.Stats().Conns != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections, want %d", s.Stats().Conns, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestResetForClosedPort(t *testing.T) {
	a, b, _ := pair(t, fastConfig(), impairments{})
	start := time.Now()
	_, err := a.Dial(context.Background(), addrA4, netip.AddrPortFrom(addrB4, 81))
	if !errors.Is(err, ErrRefused) {
		t.Fatalf("err = %v, want refused", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("refusal took %v", d)
	}
	if b.Stats().ResetsSent != 1 {
		t.Fatalf("resets sent = %d", b.Stats().ResetsSent)
	}
	// A reset also ends an established connection.
	c, s := connect(t, a, b, addrA4, addrB4, 80)
	s.Write([]byte("unread"))
	time.Sleep(20 * time.Millisecond)
	c.Close() // unread data: reset
	buf := make([]byte, 10)
	s.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := s.Read(buf); !errors.Is(err, ErrReset) {
		t.Fatalf("read after peer reset: %v", err)
	}
	s.Close()
}

func TestSimultaneousClose(t *testing.T) {
	a, b, _ := pair(t, fastConfig(), impairments{delay: 5 * time.Millisecond})
	c, s := connect(t, a, b, addrA4, addrB4, 80)
	c.Close()
	s.Close()
	waitConns(t, a, 0)
	waitConns(t, b, 0)
	if c.err != nil || s.err != nil {
		t.Fatalf("errors %v / %v", c.err, s.err)
	}
}

// TestRetransmitLimit: data unacknowledged for RetransmitTimeout while
// it is retransmitted fails the connection, and an unanswered SYN fails
// Dial after its retries.
func TestRetransmitLimit(t *testing.T) {
	cfg := fastConfig()
	cfg.RetransmitTimeout = time.Second
	cfg.synRetries = 2
	a, b, l := pair(t, cfg, impairments{})
	c, s := connect(t, a, b, addrA4, addrB4, 80)
	l.setImpairments(impairments{loss: 1})
	start := time.Now()
	c.Write([]byte("lost forever"))
	buf := make([]byte, 10)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := c.Read(buf)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("err = %v, want timeout", err)
	}
	t.Logf("failed after %v", time.Since(start))
	if _, err := c.Write([]byte("x")); !errors.Is(err, ErrTimeout) {
		t.Fatalf("write after failure: %v", err)
	}
	c.Close()
	s.Close()
	waitConns(t, a, 0)

	// An unanswered SYN fails the same way.
	_, err = a.Dial(context.Background(), addrA4, netip.AddrPortFrom(addrB4, 80))
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("dial into the void: %v", err)
	}
}

func TestDeadlines(t *testing.T) {
	cfg := fastConfig()
	cfg.SendBuffer, cfg.ReceiveBuffer = 4096, 4096
	a, b, _ := pair(t, cfg, impairments{})
	c, s := connect(t, a, b, addrA4, addrB4, 80)
	buf := make([]byte, 10)
	c.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	_, err := c.Read(buf)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past deadline: %v", err)
	}
	// Extending the deadline makes the conn usable again, and a deadline
	// set while a Read waits wakes it.
	c.SetReadDeadline(time.Time{})
	done := make(chan error, 1)
	go func() { _, err := c.Read(buf); done <- err }()
	time.Sleep(20 * time.Millisecond)
	c.SetReadDeadline(time.Now())
	if err := <-done; !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("woken read: %v", err)
	}
	// A writer blocked on a peer that does not read times out.
	c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	n, err := c.Write(make([]byte, 64<<10))
	if !errors.Is(err, os.ErrDeadlineExceeded) || n == 0 || n >= 64<<10 {
		t.Fatalf("write: %d %v", n, err)
	}
	// What was queued is delivered once the peer reads.
	got := 0
	s.SetReadDeadline(time.Now().Add(2 * time.Second))
	for got < n {
		m, err := s.Read(make([]byte, 1000))
		if err != nil {
			t.Fatalf("after %d of %d bytes: %v", got, n, err)
		}
		got += m
	}
	c.Close()
	s.Close()
}

func TestZeroWindow(t *testing.T) {
	cfg := fastConfig()
	cfg.ReceiveBuffer = 4096
	a, b, _ := pair(t, cfg, impairments{delay: time.Millisecond})
	c, s := connect(t, a, b, addrA4, addrB4, 80)
	msg := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB
	go func() { c.Write(msg); c.CloseWrite() }()
	time.Sleep(300 * time.Millisecond) // the window closes; probes go out
	s.mu.Lock()
	free := s.rcvWindow()
	s.mu.Unlock()
	if free != 0 {
		t.Fatalf("receive buffer not full: %d free", free)
	}
	s.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(s)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("read %d bytes, %v", len(got), err)
	}
	c.Close()
	s.Close()
}

// TestBacklogBound: with the backlog full of connections waiting for
// Accept, SYNs are dropped (as in Linux) until Accept makes room.
func TestBacklogBound(t *testing.T) {
	cfg := fastConfig()
	cfg.Backlog = 2
	a, b, _ := pair(t, cfg, impairments{})
	l, err := b.Listen(80)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		c := dial(t, a, addrA4, netip.AddrPortFrom(addrB4, 80))
		defer c.Close()
		// The server takes the handshake's last ACK after Dial returns.
		waitFor(t, "the connection in the backlog", func() bool { return len(l.acceptq) == i+1 })
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if c, err := a.Dial(ctx, addrA4, netip.AddrPortFrom(addrB4, 80)); err == nil {
		c.Close()
		t.Fatal("a third connection with backlog 2")
	}
	if d := b.Stats().Dropped; d == 0 {
		t.Fatal("no SYN dropped")
	}
	// Accepting makes room.
	accept(t, l).Close()
	if _, err := a.Dial(context.Background(), addrA4, netip.AddrPortFrom(addrB4, 80)); err != nil {
		t.Fatalf("dial after accept: %v", err)
	}
	l.Close()
}

// waitFor polls cond for up to five seconds.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	waitForD(t, 5*time.Second, what, cond)
}

// waitForD polls cond for up to d.
func waitForD(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestMaxConns(t *testing.T) {
	cfg := fastConfig()
	cfg.MaxConns = 2
	a, b, _ := pair(t, cfg, impairments{})
	l, _ := b.Listen(80)
	defer l.Close()
	dial(t, a, addrA4, netip.AddrPortFrom(addrB4, 80))
	dial(t, a, addrA4, netip.AddrPortFrom(addrB4, 80))
	if _, err := a.Dial(context.Background(), addrA4, netip.AddrPortFrom(addrB4, 80)); err == nil {
		t.Fatal("third connection beyond MaxConns")
	}
}

func TestNoGoroutinesLeft(t *testing.T) {
	base := runtime.NumGoroutine()
	func() {
		a, b, l := pair(t, fastConfig(), impairments{jitter: time.Millisecond})
		c, s := connect(t, a, b, addrA4, addrB4, 80)
		transfer(t, c, s, 256<<10)
		c.SetReadDeadline(time.Now().Add(time.Hour))
		c2, _ := connect(t, a, b, addrA4, addrB4, 81)
		go c2.Read(make([]byte, 1)) // blocked until the stack closes
		c.Close()
		s.Close()
		a.Close()
		b.Close()
		l.close()
	}()
	checkGoroutines(t, base)
}

func TestCloseWakesBlocked(t *testing.T) {
	a, b, _ := pair(t, fastConfig(), impairments{})
	c, _ := connect(t, a, b, addrA4, addrB4, 80)
	l, _ := b.Listen(90)
	errc := make(chan error, 2)
	go func() { _, err := c.Read(make([]byte, 1)); errc <- err }()
	go func() { _, err := l.Accept(); errc <- err }()
	time.Sleep(20 * time.Millisecond)
	c.Close()
	l.Close()
	for range 2 {
		select {
		case err := <-errc:
			if !errors.Is(err, net.ErrClosed) {
				t.Fatalf("err = %v", err)
			}
		case <-time.After(time.Second):
			t.Fatal("Close did not wake a blocked call")
		}
	}
}

// TestEstablishedPathAllocs: sending and receiving data on an established
// connection allocates nothing.
func TestEstablishedPathAllocs(t *testing.T) {
	a, b := directPair(t, fastConfig())
	c, s := connect(t, a, b, addrA4, addrB4, 80)
	msg := make([]byte, 1000)
	buf := make([]byte, 2000)
	for range 100 {
		c.Write(msg)
		io.ReadFull(s, buf[:len(msg)])
	}
	allocs := testing.AllocsPerRun(500, func() {
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(s, buf[:len(msg)]); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per round, want 0", allocs)
	}
}

func BenchmarkTransfer(b *testing.B) {
	a, bb := directPair(b, Config{})
	c, s := connect(b, a, bb, addrA4, addrB4, 80)
	msg := make([]byte, 16<<10)
	buf := make([]byte, 16<<10)
	for range 100 { // warm the buffer pools
		c.Write(msg)
		io.ReadFull(s, buf)
	}
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		c.Write(msg)
		io.ReadFull(s, buf)
	}
}

// corkRecorder is a Corker that counts the packets output while it is
// corked and while it is not.
type corkRecorder struct {
	mu              sync.Mutex
	depth, corks    int
	inside, outside int
}

func (r *corkRecorder) Cork() {
	r.mu.Lock()
	r.depth++
	r.corks++
	r.mu.Unlock()
}

func (r *corkRecorder) Uncork() {
	r.mu.Lock()
	r.depth--
	r.mu.Unlock()
}

func (r *corkRecorder) count() {
	r.mu.Lock()
	if r.depth > 0 {
		r.inside++
	} else {
		r.outside++
	}
	r.mu.Unlock()
}

// TestBatchCorksBursts: the segments a connection sends at once go out
// between Cork and Uncork of Config.Batch, so that they can leave in one
// system call; lone packets are not corked.
func TestBatchCorksBursts(t *testing.T) {
	rec := &corkRecorder{}
	cfg := fastConfig()
	cfg.Output = func([]byte) error { rec.count(); return nil }
	cfg.Batch = func() Corker { return rec }
	a, b := directPair(t, cfg)
	c, s := connect(t, a, b, addrA4, addrB4, 80)
	data := make([]byte, 256<<10)
	go c.Write(data)
	if _, err := io.ReadFull(s, data); err != nil {
		t.Fatal(err)
	}
	// The last segment reaches the reader inside the sender's cork, so
	// the Uncork may come just after the read.
	waitFor(t, "Cork and Uncork balanced", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return rec.depth == 0
	})
	rec.mu.Lock()
	defer rec.mu.Unlock()
	// 256 KiB is about 210 segments; the handshake and most ACKs go
	// alone.
	if rec.inside < 100 || rec.outside == 0 || rec.corks >= rec.inside {
		t.Fatalf("%d packets sent corked in %d corks, %d not corked: want the bursts corked, lone packets not",
			rec.inside, rec.corks, rec.outside)
	}
}
