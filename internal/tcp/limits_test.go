package tcp

import (
	"context"
	"errors"
	"io"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/microlink-go/microlink/internal/packet"
)

// TestSimultaneousOpen: two stacks dial each other from and to the same
// ports at once; the SYNs cross, each side answers with a SYN-ACK, and
// both connections are established and carry data.
func TestSimultaneousOpen(t *testing.T) {
	a, b, _ := pair(t, fastConfig(), impairments{delay: 5 * time.Millisecond})
	pa, pb := netip.AddrPortFrom(addrA4, 5000), netip.AddrPortFrom(addrB4, 6000)
	type res struct {
		c   *Conn
		err error
	}
	ch := make(chan res, 2)
	for _, d := range []struct {
		s        *Stack
		src, dst netip.AddrPort
	}{{a, pa, pb}, {b, pb, pa}} {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, err := d.s.dial(ctx, d.src, d.dst)
			ch <- res{c, err}
		}()
	}
	var conns []*Conn
	for range 2 {
		r := <-ch
		if r.err != nil {
			t.Fatalf("simultaneous dial: %v", r.err)
		}
		conns = append(conns, r.c)
	}
	if st := a.Stats(); st.ResetsSent != 0 {
		t.Fatalf("%d resets in a simultaneous open", st.ResetsSent)
	}
	conns[0].Write([]byte("hello"))
	buf := make([]byte, 5)
	conns[1].SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.ReadFull(conns[1], buf); err != nil || string(buf) != "hello" {
		t.Fatalf("read %q %v", buf, err)
	}
}

// capture is an Output that keeps the TCP segments a stack sends.
type capture struct {
	mu   sync.Mutex
	segs []segment
	raw  [][]byte
}

func (c *capture) output(pkt []byte) error {
	var p packet.Parsed
	if p.Decode(pkt) != nil {
		return nil
	}
	raw := append([]byte(nil), p.Transport()...)
	var sg segment
	if parseSegment(p.Src, p.Dst, raw, &sg) != nil {
		return nil
	}
	c.mu.Lock()
	c.segs = append(c.segs, sg)
	c.raw = append(c.raw, raw)
	c.mu.Unlock()
	return nil
}

func (c *capture) count(f func(*segment) bool) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for i := range c.segs {
		if f(&c.segs[i]) {
			n++
		}
	}
	return n
}

// inject hands s a segment built from h, as if its peer had sent it.
func inject(s *Stack, h header) {
	raw := seedSegment(h, nil)
	s.Inbound(h.src.Addr(), h.dst.Addr(), raw)
}

// TestTimeWait: the side that closes first keeps the four-tuple in
// TIME-WAIT outside the connection table, so its slot is free at once;
// the peer's retransmitted FIN is acknowledged again; Dial does not pick
// the tuple; the tuple is dropped after TimeWait.
func TestTimeWait(t *testing.T) {
	cfg := fastConfig()
	cfg.MaxConns = 1
	cfg.TimeWait = 300 * time.Millisecond
	a, b, _ := pair(t, cfg, impairments{})
	c, s := connect(t, a, b, addrA4, addrB4, 80)
	c.Close()
	io.ReadAll(s)
	s.Close()
	waitFor(t, "TIME-WAIT", func() bool { st := a.Stats(); return st.Conns == 0 && st.TimeWait == 1 })
	// The slot is free: with MaxConns 1, a new connection works.
	c2, s2 := connect(t, a, b, addrA4, addrB4, 80)
	if c2.id == c.id {
		t.Fatal("Dial reused a four-tuple in TIME-WAIT")
	}
	c2.Close()
	s2.Close()

	// A retransmitted FIN gets an ACK from the TIME-WAIT tuple.
	cap := &capture{}
	cfg.Output = cap.output
	x := New(cfg)
	defer x.Close()
	local, remote := netip.AddrPortFrom(addrA4, 1234), netip.AddrPortFrom(addrB4, 80)
	x.mu.Lock()
	x.tw.add(connID{local: local, remote: remote}, 1000, 5000)
	x.mu.Unlock()
	inject(x, header{src: remote, dst: local, seq: 4999, ack: 1000, flags: flagFIN | flagACK, wscale: -1})
	if n := cap.count(func(sg *segment) bool { return sg.flags == flagACK && sg.ack == 5000 && sg.seq == 1000 }); n != 1 {
		t.Fatalf("%d ACKs of the retransmitted FIN, want 1", n)
	}
	waitFor(t, "the end of TIME-WAIT", func() bool { return x.Stats().TimeWait == 0 && a.Stats().TimeWait == 0 })
}

// flood sends n SYNs to port on s from a peer that never answers.
func flood(s *Stack, port uint16, n int) {
	src := netip.MustParseAddr("100.64.0.66")
	for i := range n {
		inject(s, header{src: netip.AddrPortFrom(src, uint16(10000+i)), dst: netip.AddrPortFrom(addrB4, port),
			seq: uint32(i * 1000), flags: flagSYN, mss: 1240, wscale: 7, sackOK: true})
	}
}

// TestSYNFlood: SYNs from a peer that never completes the handshake
// take at most MaxHalfOpen connections, each for HalfOpenTimeout and
// without buffers; beyond that the stack answers with SYN cookies. A
// second peer connects meanwhile (through a cookie) with its options
// intact, and the stack can still dial out.
func TestSYNFlood(t *testing.T) {
	cfg := fastConfig()
	cfg.MaxHalfOpen = 4
	cfg.HalfOpenTimeout = 500 * time.Millisecond
	a, b, _ := pair(t, cfg, impairments{delay: time.Millisecond})
	l, err := b.Listen(80)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	flood(b, 80, 200)
	st := b.Stats()
	if st.HalfOpen != 4 || st.Conns != 4 || st.SYNCookies != 196 {
		t.Fatalf("after 200 SYNs: %d half-open, %d connections, %d cookies; want 4, 4, 196", st.HalfOpen, st.Conns, st.SYNCookies)
	}
	if st.BufferBytes != 0 {
		t.Fatalf("half-open connections hold %d bytes of buffer budget", st.BufferBytes)
	}
	// The second peer's SYN finds the half-open slots taken: it gets a
	// cookie, and its ACK makes the connection.
	c := dial(t, a, addrA4, netip.AddrPortFrom(addrB4, 80))
	s := accept(t, l)
	if b.Stats().SYNCookies != 197 {
		t.Fatal("the second peer did not get a cookie")
	}
	s.mu.Lock()
	mss, shift, sack := s.mss, s.sndShift, s.sackOK
	s.mu.Unlock()
	if mss != 1240 || shift != 7 || !sack {
		t.Fatalf("options through the cookie: mss %d, window scale %d, SACK %v", mss, shift, sack)
	}
	s.mu.Lock()
	srtt := s.srtt
	s.mu.Unlock()
	if srtt != 0 {
		t.Fatalf("an RTT sample of %v from a handshake whose SYN-ACK time is not known", srtt)
	}
	transfer(t, c, s, 256<<10)
	// The stack dials out meanwhile.
	l2, _ := a.Listen(90)
	defer l2.Close()
	dial(t, b, addrB4, netip.AddrPortFrom(addrA4, 90)).Close()
	// A cookie from elsewhere, or stale, makes nothing.
	before := b.Stats().Conns
	inject(b, header{src: netip.AddrPortFrom(addrA4, 999), dst: netip.AddrPortFrom(addrB4, 80), seq: 5, ack: 12345, flags: flagACK, wscale: -1})
	if b.Stats().Conns != before {
		t.Fatal("a forged cookie made a connection")
	}
	waitFor(t, "half-open connections to time out", func() bool { return b.Stats().HalfOpen == 0 })
}

// TestDialReserve: connections from peers may take all but an eighth of
// MaxConns; the rest stay free for Dial.
func TestDialReserve(t *testing.T) {
	cfg := fastConfig()
	cfg.MaxConns = 16
	a, b, _ := pair(t, cfg, impairments{})
	l, _ := b.Listen(80)
	defer l.Close()
	for range 14 {
		dial(t, a, addrA4, netip.AddrPortFrom(addrB4, 80))
		accept(t, l)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := a.Dial(ctx, addrA4, netip.AddrPortFrom(addrB4, 80)); err == nil {
		t.Fatal("a connection from a peer took a slot kept for Dial")
	}
	l2, _ := a.Listen(90)
	defer l2.Close()
	for i := range 2 {
		if _, err := b.Dial(context.Background(), addrB4, netip.AddrPortFrom(addrA4, 90)); err != nil {
			t.Fatalf("dial %d into the reserve: %v", i+1, err)
		}
	}
	if _, err := b.Dial(context.Background(), addrB4, netip.AddrPortFrom(addrA4, 90)); !errors.Is(err, errTooMany) {
		t.Fatalf("dial beyond MaxConns: %v", err)
	}
}

// TestFinWait2KeepAlive: a connection shut down with CloseWrite and still
// read is watched by keep-alives: if the peer vanishes, the read fails
// instead of waiting forever in FIN-WAIT-2.
func TestFinWait2KeepAlive(t *testing.T) {
	a, b, l := pair(t, keepAliveConfig(), impairments{})
	c, _ := connect(t, a, b, addrA4, addrB4, 80)
	c.CloseWrite()
	waitFor(t, "FIN-WAIT-2", func() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.state == stateFinWait2 })
	l.setImpairments(impairments{loss: 1})
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, ErrTimeout) {
		t.Fatalf("read in FIN-WAIT-2 from a vanished peer: %v, want ErrTimeout", err)
	}
}

// TestAutotune: over a 40 ms round trip, the buffers grow with the
// transfer, stay within the stack's memory budget, and go back to their
// start (with their chunks released) once the connection is idle.
func TestAutotune(t *testing.T) {
	cfg := scriptConfig()
	cfg.MemoryLimit = 3 << 20
	a, b, _ := scriptPair(t, cfg, scriptRTT/2, func(scriptedPacket) (bool, time.Duration) { return false, 0 })
	c, s := connect(t, a, b, addrA4, addrB4, 80)
	oneWay(t, c, s, 8<<20)
	c.mu.Lock()
	snd := c.sndLimit
	c.mu.Unlock()
	s.mu.Lock()
	rcv := s.rcvLimit
	s.mu.Unlock()
	t.Logf("send limit %d, receive limit %d, budget used %d and %d", snd, rcv, a.Stats().BufferBytes, b.Stats().BufferBytes)
	if snd <= initialBuffer || rcv <= initialBuffer {
		t.Errorf("buffers did not grow: send %d, receive %d", snd, rcv)
	}
	for _, st := range []Stats{a.Stats(), b.Stats()} {
		if st.BufferBytes > int64(cfg.MemoryLimit) {
			t.Errorf("budget exceeded: %d > %d", st.BufferBytes, cfg.MemoryLimit)
		}
	}
	// A second without data, or eight round trips: long under emulation.
	waitForD(t, 30*time.Second, "the buffers to shrink", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		s.mu.Lock()
		defer s.mu.Unlock()
		return c.sndLimit == initialBuffer && s.rcvLimit == initialBuffer && c.sndBuf.slots == nil && s.rcvBuf.slots == nil && c.sent.segs == nil
	})
	if a.Stats().BufferBytes != 0 || b.Stats().BufferBytes != 0 {
		t.Errorf("budget after shrinking: %d and %d in use, want 0", a.Stats().BufferBytes, b.Stats().BufferBytes)
	}
	// Growth again, then Close gives it back.
	oneWay(t, c, s, 2<<20)
	c.Close()
	s.Close()
	waitFor(t, "the budget to be released", func() bool { return a.Stats().BufferBytes == 0 && b.Stats().BufferBytes == 0 })
}

// TestIdleConnCost: 64 established connections that exchanged a little
// data and went idle hold no buffer memory: each costs well under 16 KiB
// of heap on each side.
func TestIdleConnCost(t *testing.T) {
	cfg := fastConfig()
	cfg.MaxConns = 100
	a, b := directPair(t, cfg)
	l, _ := b.Listen(80)
	defer l.Close()
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	var conns []*Conn
	buf := make([]byte, 100)
	for range 64 {
		c := dial(t, a, addrA4, netip.AddrPortFrom(addrB4, 80))
		s := accept(t, l)
		c.Write(buf)
		io.ReadFull(s, buf)
		s.Write(buf)
		io.ReadFull(c, buf)
		conns = append(conns, c, s)
	}
	waitFor(t, "idle connections to let go of their buffers", func() bool {
		for _, c := range conns {
			c.mu.Lock()
			idle := c.sndBuf.slots == nil && c.rcvBuf.slots == nil
			c.mu.Unlock()
			if !idle {
				return false
			}
		}
		return true
	})
	per := (int64(heap()) - int64(before)) / 128
	t.Logf("%d bytes of heap per idle connection", per)
	if per > 16<<10 {
		t.Fatalf("%d bytes per idle connection, want at most 16 KiB", per)
	}
	runtime.KeepAlive(conns)
}

// TestFinWait2Timeout: a connection closed with Close whose peer never
// sends its FIN is forgotten after FinWait2Timeout.
func TestFinWait2Timeout(t *testing.T) {
	cfg := fastConfig() // FinWait2Timeout: 1 s
	cfg.KeepAliveIdle = -1
	a, b, _ := pair(t, cfg, impairments{})
	c, s := connect(t, a, b, addrA4, addrB4, 80)
	defer s.Close()
	c.Close()
	waitFor(t, "FIN-WAIT-2", func() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.state == stateFinWait2 })
	start := time.Now()
	waitFor(t, "the connection to be forgotten", func() bool { return a.Stats().Conns == 0 })
	if d := time.Since(start); d < 800*time.Millisecond {
		t.Fatalf("forgotten after %v, before FinWait2Timeout", d)
	}
	if b.Stats().Conns != 1 {
		t.Fatal("the peer's connection went too")
	}
}
