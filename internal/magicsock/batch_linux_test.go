package magicsock

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// sink is a plain UDP socket that collects what arrives, datagram by
// datagram.
type sink struct {
	pc   *net.UDPConn
	addr netip.AddrPort
}

func newSink(t *testing.T, network, ip string) *sink {
	t.Helper()
	pc, err := net.ListenUDP(network, &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Skipf("no %s socket: %v", network, err)
	}
	pc.SetReadBuffer(4 << 20)
	t.Cleanup(func() { pc.Close() })
	return &sink{pc: pc, addr: pc.LocalAddr().(*net.UDPAddr).AddrPort()}
}

// expect reads len(want) datagrams and checks they are want, in order.
func (s *sink) expect(t *testing.T, want [][]byte) {
	t.Helper()
	buf := make([]byte, 1<<16)
	for i, w := range want {
		s.pc.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := s.pc.Read(buf)
		if err != nil {
			t.Fatalf("datagram %d of %d: %v", i, len(want), err)
		}
		if !bytes.Equal(buf[:n], w) {
			t.Fatalf("datagram %d: got %d bytes %.8x..., want %d bytes %.8x...", i, n, buf[:min(n, 8)], len(w), w[:min(len(w), 8)])
		}
	}
	s.pc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if n, err := s.pc.Read(buf); err == nil {
		t.Fatalf("an extra datagram of %d bytes", n)
	}
}

// datagrams returns n messages of size bytes each (the last one last
// bytes), each marked with its number.
func datagrams(n, size, last int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		sz := size
		if i == n-1 {
			sz = last
		}
		out[i] = bytes.Repeat([]byte{byte(i)}, sz)
		copy(out[i], fmt.Sprintf("%04d", i))
	}
	return out
}

// sendCorked holds msgs for dst in c and sends them with Uncork.
func sendCorked(t *testing.T, c *Conn, dsts []netip.AddrPort, msgs [][]byte) {
	t.Helper()
	c.Cork()
	for i, m := range msgs {
		dst := dsts[i%len(dsts)]
		if !c.hold(m, dst) {
			if err := c.writeUDP(m, dst); err != nil {
				t.Fatalf("writeUDP: %v", err)
			}
		}
	}
	c.Uncork()
}

func TestCorkedSends(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tweak  func(w *batchWriter)
		gsoOff bool // the kernel refuses GSO on the socket (SO_NO_CHECK)
	}{
		{name: "gso"},
		{name: "sendmmsg", tweak: func(w *batchWriter) { w.gso = false }},
		{name: "sendmsg", tweak: func(w *batchWriter) { w.gso, w.noMMsg = false, true }},
		{name: "gso-refused", gsoOff: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newNode(t, nil, Options{BindIPv6: netip.MustParseAddr("::1")})
			s1, s2 := newSink(t, "udp4", "127.0.0.1"), newSink(t, "udp4", "127.0.0.1")
			s6 := newSink(t, "udp6", "::1")
			pc := a.pc4.Load()
			a.out.w4.setSocket(pc)
			if !a.out.w4.gso {
				t.Log("the kernel offers no UDP GSO: testing the fallback only")
			}
			if tc.tweak != nil {
				tc.tweak(&a.out.w4)
			}
			if tc.gsoOff {
				rc, _ := pc.SyscallConn()
				rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_NO_CHECK, 1) })
			}

			// Runs of equal datagrams with a shorter last one, more
			// than a batch holds, to one destination.
			msgs := datagrams(150, 1312, 100)
			before := a.Counters().DirectPacketsOut
			sendCorked(t, a.Conn, []netip.AddrPort{s1.addr}, msgs)
			s1.expect(t, msgs)
			if got := a.Counters().DirectPacketsOut - before; got != 150 {
				t.Errorf("counted %d datagrams sent, want 150", got)
			}
			if tc.name == "gso" && a.out.w4.gso && a.out.w4.segs[0] < 2 {
				t.Errorf("the last send held %d datagram(s): not a GSO run", a.out.w4.segs[0])
			}
			if tc.gsoOff && a.out.w4.gso {
				t.Errorf("GSO still on after the kernel refused it")
			}

			// Two destinations alternating, sizes changing, a
			// datagram too large to hold, and empty ones.
			var m1, m2 [][]byte
			var all [][]byte
			for i := range 40 {
				m := datagrams(1, 0, 200+i*37%700)[0]
				switch i {
				case 7:
					m = bytes.Repeat([]byte{7}, maxHeld+1)
				case 11, 12:
					m = nil
				}
				all = append(all, m)
				if i%2 == 0 {
					m1 = append(m1, m)
				} else {
					m2 = append(m2, m)
				}
			}
			sendCorked(t, a.Conn, []netip.AddrPort{s1.addr, s2.addr}, all)
			s1.expect(t, m1)
			s2.expect(t, m2)

			// Both families in one batch.
			m4, m6 := datagrams(5, 500, 500), datagrams(5, 600, 10)
			var mixed [][]byte
			for i := range 5 {
				mixed = append(mixed, m4[i], m6[i])
			}
			sendCorked(t, a.Conn, []netip.AddrPort{s1.addr, s6.addr}, mixed)
			s1.expect(t, m4)
			s6.expect(t, m6)
		})
	}
}

// TestCorkNests: only the last Uncork sends, and an uncorked Conn holds
// nothing.
func TestCorkNests(t *testing.T) {
	a := newNode(t, nil, Options{})
	s := newSink(t, "udp4", "127.0.0.1")
	if a.hold([]byte("x"), s.addr) {
		t.Fatal("held while not corked")
	}
	a.Cork()
	a.Cork()
	if !a.hold([]byte("one"), s.addr) {
		t.Fatal("not held while corked")
	}
	a.Uncork()
	s.expect(t, nil)
	a.Uncork()
	s.expect(t, [][]byte{[]byte("one")})
	a.Uncork() // one too many: harmless
	if a.hold([]byte("x"), s.addr) {
		t.Fatal("held after the last Uncork")
	}
}

// TestCorkedSendAllocs: a corked burst through Send, and its flush,
// allocate nothing once the batch exists.
func TestCorkedSendAllocs(t *testing.T) {
	a := newNode(t, nil, Options{})
	s := newSink(t, "udp4", "127.0.0.1")
	go func() { // drain the sink without allocating per datagram
		buf := make([]byte, 1<<16)
		for {
			if _, err := s.pc.Read(buf); err != nil {
				return
			}
		}
	}()
	msg := make([]byte, 1312)
	burst := func() {
		a.Cork()
		for range 40 {
			a.hold(msg, s.addr)
		}
		a.Uncork()
	}
	burst()
	if n := testing.AllocsPerRun(100, burst); n != 0 {
		t.Fatalf("a corked burst allocates %v times", n)
	}
}

// TestBatchRead: datagrams sent as GSO runs, from two senders and both
// families, reach ReceiveWireGuard one by one, in order, with their
// sources, however the socket is read: recvmmsg with GRO, without, or
// one datagram per system call.
func TestBatchRead(t *testing.T) {
	for _, tc := range []struct {
		name           string
		noGRO, noBatch bool
	}{
		{name: "gro"},
		{name: "recvmmsg", noGRO: true},
		{name: "single", noBatch: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testNoGRO.Store(tc.noGRO)
			testNoRecvmmsg.Store(tc.noBatch)
			defer func() { testNoGRO.Store(false); testNoRecvmmsg.Store(false) }()
			var mu sync.Mutex
			got := map[netip.AddrPort][][]byte{}
			total, uncorked, selfCorked := 0, 0, 0
			burst := &countCorker{}
			var self atomic.Pointer[Conn] // b's, for the hook
			b := newNode(t, nil, Options{BindIPv6: netip.MustParseAddr("::1"), Burst: burst, ReceiveWireGuard: func(msg []byte, src netip.AddrPort) {
				mu.Lock()
				got[src] = append(got[src], bytes.Clone(msg))
				total++
				if burst.corks.Load() == 0 {
					uncorked++
				}
				if c := self.Load(); c != nil && c.out.corked.Load() > 0 {
					selfCorked++ // what the node sends now leaves with the read's other answers
				}
				mu.Unlock()
			}})
			self.Store(b.Conn)
			a1 := newNode(t, nil, Options{BindIPv6: netip.MustParseAddr("::1")})
			a2 := newNode(t, nil, Options{})
			to4 := b.udpTo
			to6 := netip.AddrPortFrom(netip.MustParseAddr("::1"), b.LocalPort())
			want1 := datagrams(60, 1312, 77)
			want2 := datagrams(30, 900, 900)
			want6 := datagrams(20, 1000, 999)
			sendCorked(t, a1.Conn, []netip.AddrPort{to4}, want1)
			sendCorked(t, a2.Conn, []netip.AddrPort{to4}, want2)
			sendCorked(t, a1.Conn, []netip.AddrPort{to6}, want6)
			waitFor(t, 5*time.Second, "all datagrams", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return total >= len(want1)+len(want2)+len(want6)
			})
			mu.Lock()
			defer mu.Unlock()
			if !tc.noBatch && uncorked > 0 {
				t.Errorf("%d datagrams handed over outside Burst's Cork and Uncork", uncorked)
			}
			if !tc.noBatch && selfCorked == 0 {
				t.Errorf("no datagram of a read of several handed over with the node's own sends corked")
			}
			waitFor(t, time.Second, "the last Uncork", func() bool { return burst.corks.Load() == 0 && b.out.corked.Load() == 0 })
			from6 := netip.AddrPortFrom(netip.MustParseAddr("::1"), a1.LocalPort())
			for src, want := range map[netip.AddrPort][][]byte{a1.udpTo: want1, a2.udpTo: want2, from6: want6} {
				if len(got[src]) != len(want) {
					t.Fatalf("from %v: %d datagrams, want %d (got from %d sources)", src, len(got[src]), len(want), len(got))
				}
				for i := range want {
					if !bytes.Equal(got[src][i], want[i]) {
						t.Fatalf("from %v: datagram %d differs", src, i)
					}
				}
			}
		})
	}
}

// TestGROJoins: with UDP GRO on, the kernel hands a GSO run over as one
// buffer, and the reader finds its segment size.
func TestGROJoins(t *testing.T) {
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	rc, _ := pc.SyscallConn()
	r, _ := newBatchReader(rc)
	if !r.gro {
		t.Skip("the kernel offers no UDP GRO")
	}
	a := newNode(t, nil, Options{})
	sendCorked(t, a.Conn, []netip.AddrPort{pc.LocalAddr().(*net.UDPAddr).AddrPort()}, datagrams(10, 1000, 1000))
	if !a.out.w4.gso {
		t.Skip("the kernel offers no UDP GSO")
	}
	pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if err := rc.Read(r.fn); err != nil || r.errno != 0 {
		t.Fatalf("read: %v %v", err, r.errno)
	}
	if r.n != 1 || r.hdrs[0].Len != 10000 || r.segmentSize(0) != 1000 {
		t.Fatalf("read %d buffers, the first of %d bytes in segments of %d; want 1 of 10000 in segments of 1000", r.n, r.hdrs[0].Len, r.segmentSize(0))
	}
	if src, ok := r.source(0); !ok || src != a.udpTo {
		t.Fatalf("source %v, want %v", src, a.udpTo)
	}
}

// TestBatchReadAllocs: receiving datagrams allocates nothing.
func TestBatchReadAllocs(t *testing.T) {
	var n atomic.Int64
	b := newNode(t, nil, Options{ReceiveWireGuard: func(msg []byte, src netip.AddrPort) { n.Add(1) }})
	a := newNode(t, nil, Options{})
	msg := make([]byte, 1312)
	burst := func() {
		want := n.Load() + 20
		a.Cork()
		for range 20 {
			a.hold(msg, b.udpTo)
		}
		a.Uncork()
		for n.Load() < want {
			time.Sleep(time.Millisecond)
		}
	}
	burst()
	if allocs := testing.AllocsPerRun(50, burst); allocs != 0 {
		t.Fatalf("a burst sent and received allocates %v times", allocs)
	}
}

// countCorker counts corks not yet undone.
type countCorker struct{ corks atomic.Int32 }

func (c *countCorker) Cork()   { c.corks.Add(1) }
func (c *countCorker) Uncork() { c.corks.Add(-1) }
