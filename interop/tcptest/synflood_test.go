package tcptest

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microlink-go/microlink/interop/lab"
	"github.com/microlink-go/microlink/interop/tcpxfer"
	"golang.org/x/sys/unix"
)

// TestSYNFlood: an ACL-permitted peer (the real tailscaled, through its
// TUN device) floods a ListenTCP listener with SYNs from random ports and
// never completes a handshake (its kernel's RSTs are dropped), while a
// second peer (tsnet) connects and moves data. microlink keeps at most
// MaxHalfOpen (16) half-open connections, answers the rest with SYN
// cookies, and the second peer's connections all succeed; its goroutines
// and heap stay bounded. The figures go to BENCHMARKS.md ("Under attack")
// when MICROLINK_BENCH_OUT is set.
func TestSYNFlood(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("needs the nft command (package nftables)")
	}
	l, ts, n := tcpLab(t, "ml-synflood", false)
	ln, err := n.ListenTCP(7000)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go tcpxfer.Serve(ln)
	second := lab.StartTSNet(t, l, "second-peer")
	waitFor(t, 10*time.Second, "the second peer in the netmap", func() bool { _, ok := findPeer(n, "second-peer"); return ok })
	dst := netip.AddrPortFrom(n.IPv4(), 7000)

	// A flooder drops what its kernel answers to the SYN-ACKs.
	nft := exec.Command("nft", "-f", "-")
	nft.Stdin = strings.NewReader(fmt.Sprintf(`table ip synflood {
	chain out {
		type filter hook output priority filter; policy accept;
		ip daddr %v tcp dport %d tcp flags & rst == rst counter drop
	}
}
`, dst.Addr(), dst.Port()))
	if out, err := nft.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	defer exec.Command("nft", "delete", "table", "ip", "synflood").Run()

	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
	if err != nil {
		t.Skipf("raw socket: %v", err)
	}
	defer unix.Close(fd)

	goroutines0 := len(lab.MicrolinkGoroutines())
	heap0 := heapInuse()
	const (
		duration = 10 * time.Second
		rate     = 5000 // SYNs per second
	)
	var sent atomic.Int64
	stop := make(chan struct{})
	flooded := make(chan struct{})
	go func() {
		defer close(flooded)
		src := ts.IPv4()
		sa := &unix.SockaddrInet4{Addr: dst.Addr().As4()}
		r := rand.New(rand.NewPCG(1, 2))
		pkt := make([]byte, 40)
		start := time.Now()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if ahead := time.Duration(i)*time.Second/rate - time.Since(start); ahead > 0 {
				time.Sleep(ahead)
			}
			synPacket(pkt, src, dst, uint16(1024+r.IntN(60000)), r.Uint32())
			if unix.Sendto(fd, pkt, 0, sa) == nil {
				sent.Add(1)
			}
		}
	}()

	// The second peer connects again and again during the flood.
	var connects []time.Duration
	var maxHalfOpen int
	floodEnd := time.Now().Add(duration)
	for time.Now().Before(floodEnd) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		start := time.Now()
		c, err := second.Dial(ctx, "tcp", dst.String())
		cancel()
		if err != nil {
			close(stop)
			t.Fatalf("second peer's connection %d during the flood: %v", len(connects)+1, err)
		}
		connects = append(connects, time.Since(start))
		c.SetDeadline(time.Now().Add(20 * time.Second))
		if err := tcpxfer.Push(c, 64<<10); err != nil {
			close(stop)
			t.Fatalf("second peer's transfer %d during the flood: %v", len(connects), err)
		}
		c.Close()
		maxHalfOpen = max(maxHalfOpen, n.Stats().TCPHalfOpen)
		time.Sleep(200 * time.Millisecond)
	}
	st := n.Stats()
	goroutines1 := len(lab.MicrolinkGoroutines())
	heap1 := heapInuse()
	close(stop)
	<-flooded

	var worst, total time.Duration
	for _, d := range connects {
		worst = max(worst, d)
		total += d
	}
	res := map[string]any{
		"seconds": duration.Seconds(), "syns_sent": sent.Load(), "syn_cookies": st.TCPSYNCookies,
		"max_half_open": maxHalfOpen, "connects": len(connects), "connect_ms_mean": total.Milliseconds() / int64(len(connects)),
		"connect_ms_max": worst.Milliseconds(), "goroutines_before": goroutines0, "goroutines_during": goroutines1,
		"heap_before": heap0, "heap_during": heap1,
	}
	t.Logf("%+v", res)
	if maxHalfOpen > 16 {
		t.Errorf("%d half-open connections, want at most 16", maxHalfOpen)
	}
	if st.TCPSYNCookies == 0 {
		t.Errorf("no SYN cookies after %d SYNs", sent.Load())
	}
	if goroutines1 > goroutines0+8 {
		t.Errorf("microlink goroutines %d during the flood, %d before", goroutines1, goroutines0)
	}
	if heap1 > heap0+16<<20 {
		t.Errorf("heap in use %d MiB during the flood, %d before", heap1>>20, heap0>>20)
	}
	if dir := os.Getenv("MICROLINK_BENCH_OUT"); dir != "" {
		b, _ := json.Marshal(res)
		os.WriteFile(filepath.Join(dir, "tcp_synflood.json"), b, 0o644)
	}
	// The half-open connections give up within HalfOpenTimeout.
	waitFor(t, 20*time.Second, "the half-open connections to time out", func() bool { return n.Stats().TCPHalfOpen == 0 })
}

func heapInuse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// synPacket writes into b (40 bytes) an IPv4 packet with a TCP SYN from
// src:sport to dst.
func synPacket(b []byte, src netip.Addr, dst netip.AddrPort, sport uint16, seq uint32) {
	clear(b)
	b[0], b[8], b[9] = 0x45, 64, unix.IPPROTO_TCP
	binary.BigEndian.PutUint16(b[2:], 40)
	s4, d4 := src.As4(), dst.Addr().As4()
	copy(b[12:16], s4[:])
	copy(b[16:20], d4[:])
	binary.BigEndian.PutUint16(b[10:], checksum(0, b[:20]))
	t := b[20:]
	binary.BigEndian.PutUint16(t[0:], sport)
	binary.BigEndian.PutUint16(t[2:], dst.Port())
	binary.BigEndian.PutUint32(t[4:], seq)
	t[12], t[13] = 5<<4, 0x02
	binary.BigEndian.PutUint16(t[14:], 64240)
	var pseudo [12]byte
	copy(pseudo[0:4], s4[:])
	copy(pseudo[4:8], d4[:])
	pseudo[9] = unix.IPPROTO_TCP
	binary.BigEndian.PutUint16(pseudo[10:], 20)
	binary.BigEndian.PutUint16(t[16:], checksum(sum(0, pseudo[:]), t))
}

func sum(s uint32, b []byte) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	return s
}

func checksum(s uint32, b []byte) uint16 {
	s = sum(s, b)
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}
