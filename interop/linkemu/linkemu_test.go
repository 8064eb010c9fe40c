package linkemu

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microlink-go/microlink/interop/lab"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { os.Exit(lab.RunInNetns(m)) }

func newPath(t *testing.T, o PathOptions) *Path {
	t.Helper()
	if os.Geteuid() != 0 || !lab.InNetns() {
		t.Skip("needs root and a network namespace of the test's own")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs the ip command")
	}
	p, err := NewPath(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// echo serves UDP echo on the peer and returns its address.
func echo(t *testing.T, p *Path) netip.AddrPort {
	t.Helper()
	var c *net.UDPConn
	err := In(p.PeerNS, func() (err error) {
		c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(p.Peer, 0)))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			c.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

// TestDelayAndLoss: the round trip is the two delays; Bernoulli loss
// loses about its share of packets in each direction.
func TestDelayAndLoss(t *testing.T) {
	p := newPath(t, PathOptions{Out: Impairment{Delay: 20 * time.Millisecond, Loss: 0.2}, In: Impairment{Delay: 10 * time.Millisecond}, Seed: 1})
	dst := echo(t, p)
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(p.Local, 0)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 500
	var sentAt [n]atomic.Int64
	go func() {
		buf := make([]byte, 8)
		for i := range n {
			binary.BigEndian.PutUint32(buf, uint32(i))
			sentAt[i].Store(time.Now().UnixNano())
			c.WriteToUDPAddrPort(buf, dst)
			time.Sleep(time.Millisecond)
		}
	}()
	got := 0
	var minRTT time.Duration
	buf := make([]byte, 100)
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	for got < n {
		m, _, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			break
		}
		i := binary.BigEndian.Uint32(buf)
		if m != 8 || i >= n {
			continue
		}
		got++
		if rtt := time.Duration(time.Now().UnixNano() - sentAt[i].Load()); minRTT == 0 || rtt < minRTT {
			minRTT = rtt
		}
	}
	out, in := p.Counters()
	t.Logf("%d of %d echoed, min RTT %v, out %+v, in %+v", got, n, minRTT, out, in)
	if minRTT < 30*time.Millisecond || minRTT > 45*time.Millisecond {
		t.Errorf("min RTT %v, want 30 ms and a little", minRTT)
	}
	if got < n*65/100 || got > n*95/100 || in.Lost != 0 || out.Lost == 0 {
		t.Errorf("%d of %d echoed with 20%% loss one way; lost out %d, in %d", got, n, out.Lost, in.Lost)
	}
	if out.UDP != uint64(n)-out.Lost || out.UDPBytes != 8*out.UDP {
		t.Errorf("direct UDP counted %d packets, %d bytes; want %d, %d", out.UDP, out.UDPBytes, n-int(out.Lost), 8*(n-int(out.Lost)))
	}
}

// TestBurstLoss: Gilbert-Elliott loss comes in runs of about 1/BurstLeave
// packets.
func TestBurstLoss(t *testing.T) {
	d := &direction{imp: Impairment{BurstEnter: 0.01, BurstLeave: 0.1}}
	d.rng = newRand(7)
	lost, bursts, run := 0, 0, 0
	const n = 200000
	for range n {
		if d.lose() {
			lost++
			run++
			continue
		}
		if run > 0 {
			bursts++
			run = 0
		}
	}
	mean := float64(lost) / float64(bursts)
	rate := float64(lost) / n
	t.Logf("loss %.3f, %d bursts of %.1f on average", rate, bursts, mean)
	if rate < 0.07 || rate > 0.11 || mean < 8 || mean > 12 {
		t.Errorf("loss %.3f in bursts of %.1f; want about 0.09 in bursts of 10", rate, mean)
	}
}

// TestGSOCut: a UDP GSO super-packet from the peer arrives as the
// datagrams it stands for, each with a valid checksum (the kernel drops
// datagrams with bad ones).
func TestGSOCut(t *testing.T) {
	p := newPath(t, PathOptions{In: Impairment{Delay: time.Millisecond}})
	rc, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(p.Local, 0)))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var sc *net.UDPConn
	if err := In(p.PeerNS, func() (err error) {
		sc, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(p.Peer, 0)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	const seg, count = 1200, 10
	payload := make([]byte, seg*count-500)
	for i := range payload {
		payload[i] = byte(i / seg)
	}
	// One sendmsg with UDP_SEGMENT: a GSO super-packet.
	oob := make([]byte, unix.CmsgSpace(2))
	h := (*unix.Cmsghdr)(unsafePointer(oob))
	h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(oob[unix.CmsgLen(0):], seg)
	if _, _, err := sc.WriteMsgUDPAddrPort(payload, oob, rc.LocalAddr().(*net.UDPAddr).AddrPort()); err != nil {
		t.Skipf("UDP GSO not available: %v", err)
	}
	buf := make([]byte, 65536)
	rc.SetReadDeadline(time.Now().Add(2 * time.Second))
	for i := range count {
		n, _, err := rc.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		want := min(seg, len(payload)-i*seg)
		if n != want || !bytes.Equal(buf[:n], payload[i*seg:i*seg+n]) {
			t.Fatalf("datagram %d: %d bytes, want %d of the payload", i, n, want)
		}
	}
	if _, in := p.Counters(); in.Packets != count {
		t.Errorf("the emulator saw %d packets, want %d", in.Packets, count)
	}
}

// TestTCPThrough: the kernel's TCP (with TSO super-packets on the veth)
// carries data intact across a delayed, lossy path.
func TestTCPThrough(t *testing.T) {
	p := newPath(t, PathOptions{Out: Impairment{Delay: 10 * time.Millisecond, Loss: 0.01}, In: Impairment{Delay: 10 * time.Millisecond, Loss: 0.01}, Seed: 3})
	l, err := Listen(p.PeerNS, "tcp4", netip.AddrPortFrom(p.Peer, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	const size = 4 << 20
	sums := make(chan [32]byte, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		h := sha256.New()
		io.Copy(h, c)
		sums <- [32]byte(h.Sum(nil))
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp4", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i * 31 / 7)
	}
	start := time.Now()
	c.Write(data)
	c.Close()
	select {
	case got := <-sums:
		if got != sha256.Sum256(data) {
			t.Fatal("data corrupted")
		}
	case <-time.After(60 * time.Second):
		t.Fatal("transfer timed out")
	}
	out, in := p.Counters()
	t.Logf("%d MiB in %v; out %+v, in %+v", size>>20, time.Since(start), out, in)
	if out.Lost == 0 {
		t.Error("nothing lost with 1% loss")
	}
}

// TestCutMalformed: frames that are not what their virtio_net_hdr says
// are refused or passed through, never a panic.
func TestCutMalformed(t *testing.T) {
	r := newRand(9)
	scratch := make([]byte, 0, 2048)
	for i := range 20000 {
		h := make([]byte, vnetHdrLen)
		f := make([]byte, r.IntN(200))
		for j := range h {
			h[j] = byte(r.Uint32())
		}
		for j := range f {
			f[j] = byte(r.Uint32())
		}
		if i%2 == 0 && len(f) >= ethLen+20 {
			// Mostly plausible: an IPv4 header and a small GSO size.
			binary.BigEndian.PutUint16(f[12:], etherTypeIP4)
			f[ethLen] = 0x45
			h[1] = []byte{gsoNone, gsoTCPv4, gsoUDPL4}[i%3]
			binary.NativeEndian.PutUint16(h[4:], uint16(1+r.IntN(100)))
		}
		cut(h, f, scratch, func([]byte) {})
	}
}

// TestReseed: after the same seed, the nth packet of each direction
// meets the same fate, bursts included.
func TestReseed(t *testing.T) {
	e := &Emulator{}
	imp := Impairment{Loss: 0.05, BurstEnter: 0.01, BurstLeave: 0.2}
	for i := range e.dirs {
		e.dirs[i] = &direction{imp: imp, rng: newRand(99)}
	}
	fates := func() (s [2][]bool) {
		for i, d := range e.dirs {
			for range 2000 {
				d.mu.Lock()
				s[i] = append(s[i], d.lose())
				d.mu.Unlock()
			}
		}
		return s
	}
	e.Reseed(7)
	first := fates()
	e.dirs[0].bad = true // a burst in progress is forgotten too
	e.Reseed(7)
	if again := fates(); !slices.Equal(first[0], again[0]) || !slices.Equal(first[1], again[1]) {
		t.Fatal("the same seed gave other losses")
	}
	if slices.Equal(first[0], first[1]) {
		t.Error("both directions lose the same packets")
	}
	e.Reseed(8)
	if other := fates(); slices.Equal(first[0], other[0]) {
		t.Error("another seed gave the same losses")
	}
}
