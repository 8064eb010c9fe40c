package tcptest

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/microlink-go/microlink"
	"tailscale.com/tailcfg"
	"tailscale.com/types/key"
)

// transferSize is what each side sends in the transfer tests.
const transferSize = 4 << 20

type halfCloser interface {
	net.Conn
	CloseWrite() error
}

// exchange sends size pseudo-random bytes each way at once over a and b,
// each side closing its write half when done, and checks that both
// streams arrive intact.
func exchange(t *testing.T, a, b net.Conn, size int) time.Duration {
	t.Helper()
	start := time.Now()
	a.SetDeadline(time.Now().Add(25 * time.Second))
	b.SetDeadline(time.Now().Add(25 * time.Second))
	type result struct {
		sum [32]byte
		err error
	}
	sent := make(chan result, 2)
	recv := make(chan result, 2)
	send := func(c net.Conn, seed uint64) {
		r := rand.New(rand.NewPCG(seed, 7))
		h := sha256.New()
		buf := make([]byte, 16<<10)
		for left := size; left > 0; left -= len(buf) {
			for i := range buf {
				buf[i] = byte(r.Uint32())
			}
			n := min(left, len(buf))
			h.Write(buf[:n])
			if _, err := c.Write(buf[:n]); err != nil {
				sent <- result{err: err}
				return
			}
		}
		sent <- result{sum: [32]byte(h.Sum(nil)), err: c.(halfCloser).CloseWrite()}
	}
	read := func(c net.Conn) {
		h := sha256.New()
		n, err := io.Copy(h, c)
		if err == nil && n != int64(size) {
			err = errors.New("received " + strconv.FormatInt(n, 10) + " bytes, want " + strconv.Itoa(size))
		}
		recv <- result{sum: [32]byte(h.Sum(nil)), err: err}
	}
	go send(a, 1)
	go send(b, 2)
	go read(a)
	go read(b)
	sums := map[[32]byte]int{}
	for range 2 {
		for _, ch := range []chan result{sent, recv} {
			r := <-ch
			if r.err != nil {
				t.Fatal(r.err)
			}
			sums[r.sum]++
		}
	}
	if len(sums) != 2 {
		t.Fatalf("streams corrupted: %d distinct checksums, want 2", len(sums))
	}
	return time.Since(start)
}

func logSpeed(t *testing.T, what string, size int, d time.Duration) {
	t.Logf("%s: %d MiB each way in %v (%.2f MB/s each way)", what, size>>20, d.Round(time.Millisecond), float64(size)/d.Seconds()/1e6)
}

// osDialer dials from the test's namespace, through the kernel's TCP and
// the TUN device.
var osDialer = net.Dialer{Timeout: 10 * time.Second}

func testTransfers(t *testing.T, neverDirect bool) {
	_, ts, n := tcpLab(t, "ml-tcp", neverDirect)
	if !neverDirect {
		waitFor(t, 10*time.Second, "a direct path", func() bool {
			p, _ := findPeer(n, "real-peer")
			return p.Path == "direct"
		})
	}

	// The kernel's TCP client to microlink's listener, IPv4 and IPv6.
	ln, err := n.ListenTCP(8080)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for _, ip := range []netip.Addr{n.IPv4(), n.IPv6()} {
		accepted := make(chan net.Conn, 1)
		go func() {
			c, err := ln.Accept()
			if err == nil {
				accepted <- c
			}
		}()
		oc, err := osDialer.Dial("tcp", netip.AddrPortFrom(ip, 8080).String())
		if err != nil {
			t.Fatalf("OS dial of microlink at %v: %v", ip, err)
		}
		var mc net.Conn
		select {
		case mc = <-accepted:
		case <-time.After(5 * time.Second):
			t.Fatal("microlink accepted nothing")
		}
		if got := mc.RemoteAddr().(*net.TCPAddr).AddrPort(); got != oc.LocalAddr().(*net.TCPAddr).AddrPort() {
			t.Fatalf("microlink sees %v, the OS socket is %v", got, oc.LocalAddr())
		}
		size := transferSize
		if ip.Is6() {
			size = 1 << 20
		}
		d := exchange(t, oc, mc, size)
		logSpeed(t, "OS client -> microlink listener at "+ip.String(), size, d)
		oc.Close()
		mc.Close()
	}

	// microlink dials the kernel's TCP server on the real peer's address,
	// by name.
	ol, err := net.Listen("tcp4", netip.AddrPortFrom(ts.IPv4(), 0).String())
	if err != nil {
		t.Fatalf("OS listener on the real peer's address: %v", err)
	}
	defer ol.Close()
	port := ol.Addr().(*net.TCPAddr).Port
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ol.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	mc, err := n.DialTCP(ctx, "real-peer:"+strconv.Itoa(port))
	if err != nil {
		t.Fatalf("DialTCP to the OS server: %v", err)
	}
	oc := <-accepted
	d := exchange(t, mc, oc, transferSize)
	logSpeed(t, "microlink DialTCP -> OS server", transferSize, d)
	mc.Close()
	oc.Close()

	// A port nobody listens on is refused by the kernel with a reset.
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := n.DialTCP(ctx, netip.AddrPortFrom(ts.IPv4(), 1).String()); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("dial of a closed OS port: %v", err)
	}
	p, _ := findPeer(n, "real-peer")
	st := n.Stats()
	t.Logf("path %q, stats %+v", p.Path, st)
	if neverDirect && p.Path == "direct" {
		t.Fatalf("path %q with NeverDirect", p.Path)
	}
}

// TestTCPOverDERP: the kernel's TCP and microlink's exchange a few MiB both
// ways, either side dialing, through the DERP relay.
func TestTCPOverDERP(t *testing.T) { testTransfers(t, true) }

// TestTCPDirect: the same over a direct UDP path.
func TestTCPDirect(t *testing.T) { testTransfers(t, false) }

// TestTCPACL: with a packet filter that allows TCP to one port only, the
// kernel connects to that port and its SYNs to another port are dropped
// silently: the connection attempt times out instead of being refused.
func TestTCPACL(t *testing.T) {
	l, _, n := tcpLab(t, "ml-tcp-acl", true)
	rule := []tailcfg.FilterRule{{
		SrcIPs:   []string{"*"},
		DstPorts: []tailcfg.NetPortRange{{IP: "*", Ports: tailcfg.PortRange{First: 7000, Last: 7000}}},
		IPProto:  []int{6},
	}}
	var nk key.NodePublic
	if err := nk.UnmarshalText([]byte(n.Status().NodeKey)); err != nil {
		t.Fatal(err)
	}
	if !l.Control.AddRawMapResponse(nk, &tailcfg.MapResponse{PacketFilter: rule}) {
		t.Fatal("could not push the packet filter")
	}
	for _, port := range []uint16{7000, 7001} {
		ln, err := n.ListenTCP(port)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Write([]byte("hello from " + strconv.Itoa(int(port))))
				c.Close()
			}
		}()
	}
	dial := func(port uint16, timeout time.Duration) (string, error) {
		d := net.Dialer{Timeout: timeout}
		c, err := d.Dial("tcp", netip.AddrPortFrom(n.IPv4(), port).String())
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, err := io.ReadAll(c)
		return string(b), err
	}
	// The filter arrives asynchronously: wait until 7001 stops answering.
	waitFor(t, 10*time.Second, "the filter to close port 7001", func() bool {
		_, err := dial(7001, 500*time.Millisecond)
		return err != nil
	})
	if got, err := dial(7000, 5*time.Second); err != nil || got != "hello from 7000" {
		t.Fatalf("allowed port: %q %v", got, err)
	}
	start := time.Now()
	_, err := dial(7001, 2*time.Second)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("denied port: %v after %v, want a timeout (SYNs dropped, no reset)", err, time.Since(start))
	}
	if st := n.Stats(); st.Dropped == 0 {
		t.Fatal("no drops counted")
	}
}

// TestTCPConfig: the node's Config.TCP reaches its TCP. With MaxConns 2 the
// kernel's third connection attempt gets no answer (its SYNs are dropped)
// until one of the two is gone, and an 8 KiB receive buffer, a window of a
// few segments, still carries a transfer intact.
func TestTCPConfig(t *testing.T) {
	_, _, n := tcpLabConfig(t, "ml-tcp-config", true, microlink.TCPConfig{MaxConns: 2, ReceiveBuffer: 8 << 10, SendBuffer: 8 << 10})
	ln, err := n.ListenTCP(8080)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	addr := netip.AddrPortFrom(n.IPv4(), 8080).String()
	var ocs, mcs []net.Conn
	defer func() {
		for _, c := range append(ocs, mcs...) {
			c.Close()
		}
	}()
	for i := range 2 {
		oc, err := osDialer.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("connection %d of 2: %v", i+1, err)
		}
		ocs = append(ocs, oc)
		select {
		case mc := <-accepted:
			mcs = append(mcs, mc)
		case <-time.After(5 * time.Second):
			t.Fatalf("connection %d of 2 not accepted", i+1)
		}
	}
	d := net.Dialer{Timeout: 2 * time.Second}
	if c, err := d.Dial("tcp", addr); err == nil {
		c.Close()
		t.Fatal("a third connection was accepted with MaxConns 2")
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("third connection: %v, want a timeout (SYNs dropped)", err)
	}

	// The two connections carry data through the small windows.
	dur := exchange(t, ocs[0], mcs[0], 1<<20)
	logSpeed(t, "OS client -> microlink with 8 KiB buffers", 1<<20, dur)

	// Once a connection is fully closed (and past TIME-WAIT), there is
	// room for another.
	mcs[1].Close()
	ocs[1].Close()
	waitFor(t, 15*time.Second, "room for a new connection", func() bool {
		c, err := (&net.Dialer{Timeout: time.Second}).Dial("tcp", addr)
		if err != nil {
			return false
		}
		ocs = append(ocs, c)
		return true
	})
}
