package microlink

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/nettest"

	"github.com/microlink-go/microlink/internal/key"
	"github.com/microlink-go/microlink/internal/tailcfg"
	"github.com/microlink-go/microlink/internal/tunnel"
)

// dataNode returns a node with a working data plane (WireGuard and
// magicsock on a loopback UDP socket) and no control server. It is closed
// when the test ends.
func dataNode(t *testing.T) *Node {
	t.Helper()
	n, err := New(Config{ControlURL: "http://127.0.0.1:1", Port: -1, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	n.disco = key.NewPrivate()
	n.stack = tunnel.New(tunnel.Config{
		Output: func(pkt []byte) error {
			d := n.current.Load()
			if d == nil {
				return ErrClosed
			}
			return d.wg.SendPacket(pkt)
		},
		Logger: quietLogger(),
	})
	data, err := n.newDataPlane(n.ident.NodeKey)
	if err != nil {
		t.Fatal(err)
	}
	n.data = data
	return n
}

// pairedNodes returns two nodes that know each other as peers, without a
// control server, their WireGuard talking over loopback UDP: a is
// 100.64.0.1 and fd7a:115c:a1e0::1 ("alpha"), b is 100.64.0.2 only
// ("beta"). Disco pings have proven the direct path both ways.
func pairedNodes(t *testing.T) (a, b *Node) {
	t.Helper()
	a, b = dataNode(t), dataNode(t)
	aAddrs := []netip.Prefix{netip.MustParsePrefix("100.64.0.1/32"), netip.MustParsePrefix("fd7a:115c:a1e0::1/128")}
	bAddrs := []netip.Prefix{netip.MustParsePrefix("100.64.0.2/32")}
	node := func(n *Node, id tailcfg.NodeID, name string, addrs []netip.Prefix) *tailcfg.Node {
		return &tailcfg.Node{
			ID: id, Name: name + ".example.ts.net.", Key: n.ident.NodeKey.NodePublic(), DiscoKey: n.disco.DiscoPublic(),
			Addresses: addrs, MachineAuthorized: true,
			Endpoints: []netip.AddrPort{netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), n.data.ms.LocalPort())},
		}
	}
	allowAll := []tailcfg.FilterRule{{SrcIPs: []string{"*"}, DstPorts: []tailcfg.NetPortRange{{IP: "*", Ports: tailcfg.PortRange{Last: 65535}}}}}
	a.onMapResponse(&tailcfg.MapResponse{Node: node(a, 1, "alpha", aAddrs), Peers: []*tailcfg.Node{node(b, 2, "beta", bAddrs)}, PacketFilter: allowAll})
	b.onMapResponse(&tailcfg.MapResponse{Node: node(b, 2, "beta", bAddrs), Peers: []*tailcfg.Node{node(a, 1, "alpha", aAddrs)}, PacketFilter: allowAll})
	// Each proves its direct path to the other: with no DERP, the first
	// WireGuard handshake would otherwise wait for a retry.
	for _, p := range [][2]*Node{{a, b}, {b, a}} {
		for i := 0; ; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err := p[0].Ping(ctx, p[1].IPv4().String(), PingDisco)
			cancel()
			if err == nil {
				break
			}
			if i == 4 {
				t.Fatalf("no disco path between the paired nodes: %v", err)
			}
		}
	}
	return a, b
}

func TestPingKinds(t *testing.T) {
	a, b := pairedNodes(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// Kind 0 is a disco ping, and keeps the path its pong took.
	res, err := a.Ping(ctx, "beta", 0)
	if err != nil || res.Type != PingDisco || !res.Endpoint.IsValid() || res.Peer != "beta" || res.PeerIP != b.IPv4() {
		t.Fatalf("Ping(0) = %+v, %v", res, err)
	}
	for _, typ := range []PingType{PingTSMP, PingICMP, PingDisco | PingTSMP, PingTSMP | PingICMP, PingDisco | PingTSMP | PingICMP} {
		res, err := a.Ping(ctx, b.IPv4().String(), typ)
		if err != nil || res.Type&typ == 0 || res.Type&(res.Type-1) != 0 || res.Latency <= 0 {
			t.Errorf("Ping(%v) = %+v, %v", typ, res, err)
		}
	}
	if _, err := a.Ping(ctx, "beta", 1<<5); err == nil {
		t.Error("an unknown kind was accepted")
	}
	// Of several kinds, one that cannot answer does not stop the others:
	// beta has no IPv6 address, so ICMP to alpha's is unroutable.
	res, err = b.Ping(ctx, "fd7a:115c:a1e0::1", PingDisco|PingICMP)
	if err != nil || res.Type != PingDisco {
		t.Errorf("Ping(disco|ICMP) = %+v, %v", res, err)
	}
	for typ, want := range map[PingType]string{0: "disco", PingDisco | PingTSMP: "disco|TSMP", PingTSMP | PingICMP: "TSMP|ICMP", 1 << 5: "PingType(32)"} {
		if got := typ.String(); got != want {
			t.Errorf("PingType(%d).String() = %q, want %q", int(typ), got, want)
		}
	}
}

// TestPingAllFail: when every kind fails, the errors of all are reported.
func TestPingAllFail(t *testing.T) {
	a, _ := pairedNodes(t)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	// alpha has an IPv6 address, beta does not: nothing answers there.
	_, err := a.Ping(ctx, "fd7a:115c:a1e0::2", PingTSMP|PingICMP)
	if err == nil {
		t.Fatal("ping of an unknown address answered")
	}
}

func TestListenTCPAnyPort(t *testing.T) {
	a, b := pairedNodes(t)
	l, err := b.ListenTCP(0)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	if port == 0 {
		t.Fatalf("listener address %v", l.Addr())
	}
	go func() {
		c, err := l.Accept()
		if err == nil {
			c.Write([]byte("hi"))
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := a.DialTCP(ctx, fmt.Sprintf("beta:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 2)
	if _, err := c.Read(buf); err != nil || string(buf) != "hi" {
		t.Fatalf("read %q, %v", buf, err)
	}
}

// TestErrorsArePublic: errors match the kernel's errno values with
// errors.Is, come as *net.OpError like package net's, and name no internal
// package.
func TestErrorsArePublic(t *testing.T) {
	a, b := pairedNodes(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	check := func(what string, err, errno error) {
		t.Helper()
		var op *net.OpError
		if !errors.Is(err, errno) || !errors.As(err, &op) {
			t.Errorf("%s: %v (%T), want %v in a *net.OpError", what, err, err, errno)
		}
		for _, p := range internalPrefixes {
			if err != nil && strings.Contains(err.Error(), p+": ") {
				t.Errorf("%s: %q names package %s", what, err, p)
			}
		}
	}
	_, err := a.DialTCP(ctx, "beta:81")
	check("dial to a closed port", err, syscall.ECONNREFUSED)

	l, err := b.ListenTCP(80)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, err = b.ListenTCP(80)
	check("second TCP listener", err, syscall.EADDRINUSE)

	u, err := b.ListenUDP(9000)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	_, err = b.ListenUDP(9000)
	check("second UDP socket", err, syscall.EADDRINUSE)
	_, err = u.WriteToUDPAddrPort([]byte("x"), netip.MustParseAddrPort("[fd7a:115c:a1e0::1]:9"))
	check("UDP to IPv6 from a node without IPv6", err, syscall.ENETUNREACH)
	_, err = u.WriteToUDPAddrPort(make([]byte, 1500), netip.MustParseAddrPort("100.64.0.1:9"))
	check("UDP datagram over the MTU", err, syscall.EMSGSIZE)
	_, err = b.DialTCP(ctx, "[fd7a:115c:a1e0::1]:80")
	check("TCP to IPv6 from a node without IPv6", err, syscall.ENETUNREACH)
	u.Close()
	_, _, err = u.ReadFrom(make([]byte, 10))
	check("read from a closed socket", err, net.ErrClosed)

	var n Node
	if _, err := n.ListenUDP(0); !errors.Is(err, ErrNotConnected) || !strings.Contains(err.Error(), "not connected") {
		t.Errorf("ListenUDP before Start: %v", err)
	}
}

func TestPublicErr(t *testing.T) {
	base := errors.New("control: map poll: h2: stream reset")
	err := publicErr(fmt.Errorf("microlink: %w", base))
	if err.Error() != "microlink: map poll: stream reset" || !errors.Is(err, base) {
		t.Fatalf("publicErr = %q", err)
	}
	op := publicErr(&net.OpError{Op: "read", Net: "udp", Err: errors.New("tunnel: boom")})
	if _, ok := op.(*net.OpError); !ok || op.Error() != "read udp: boom" {
		t.Fatalf("OpError = %T %q", op, op)
	}
	for _, keep := range []string{"microlink: state file damaged", "dial: status: 500", "no prefix here"} {
		if e := errors.New(keep); publicErr(e) != e {
			t.Errorf("%q was changed", keep)
		}
	}
	if publicErr(nil) != nil {
		t.Error("nil became an error")
	}
}

func TestDialUDPAndSendUDPHonourContext(t *testing.T) {
	a, b := pairedNodes(t)
	done, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := a.DialUDP(done, "beta:9"); !errors.Is(err, context.Canceled) {
		t.Errorf("DialUDP with a canceled context: %v", err)
	}
	if err := a.SendUDP(done, "beta:9", []byte("x")); !errors.Is(err, context.Canceled) {
		t.Errorf("SendUDP with a canceled context: %v", err)
	}
	u, err := b.ListenUDP(9)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	ctx, stop := context.WithTimeout(context.Background(), 20*time.Second)
	defer stop()
	if err := a.SendUDP(ctx, "beta:9", []byte("reading")); err != nil {
		t.Fatal(err)
	}
	u.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64)
	n, from, err := u.ReadFromUDPAddrPort(buf)
	if err != nil || string(buf[:n]) != "reading" || from.Addr() != a.IPv4() {
		t.Fatalf("got %q from %v, %v", buf[:n], from, err)
	}
}

// nettestSubtests are those of nettest.TestConn that hold for datagrams.
// BasicIO and PingPong need a stream's end of file at Close, which no UDP
// socket, the kernel's included, has; FutureTimeout and ConcurrentMethods
// flood the socket and then wait for one marker datagram echoed back,
// which a UDP socket may drop once its queue is full.
const nettestSubtests = "ReadTimeout|WriteTimeout|PastTimeout|PresentTimeout|CloseTimeout|RacyRead|RacyWrite"

// TestUDPConnNettest runs the conformance tests of golang.org/x/net/nettest
// that apply to UDP on connected sockets (DialUDP) between two nodes, in a
// child process, since only -test.run can pick nettest's subtests.
func TestUDPConnNettest(t *testing.T) {
	if os.Getenv("MICROLINK_NETTEST_UDP") == "1" {
		nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
			a, b := pairedNodes(t)
			ua, err := a.ListenUDP(0)
			if err != nil {
				return nil, nil, nil, err
			}
			ub, err := b.ListenUDP(0)
			if err != nil {
				return nil, nil, nil, err
			}
			pa, pb := ua.LocalAddr().(*net.UDPAddr).AddrPort(), ub.LocalAddr().(*net.UDPAddr).AddrPort()
			c1 = &connectedUDP{u: ua, remote: netip.AddrPortFrom(b.IPv4(), pb.Port())}
			c2 = &connectedUDP{u: ub, remote: netip.AddrPortFrom(a.IPv4(), pa.Port())}
			return c1, c2, func() { c1.Close(); c2.Close() }, nil
		})
		return
	}
	if testing.Short() {
		t.Skip("runs nettest in a child process")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestUDPConnNettest$/^("+nettestSubtests+")$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "MICROLINK_NETTEST_UDP=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("nettest: %v\n%s", err, out)
	}
	for _, name := range strings.Split(nettestSubtests, "|") {
		if !strings.Contains(string(out), "--- PASS: TestUDPConnNettest/"+name) {
			t.Errorf("nettest %s did not pass:\n%s", name, out)
		}
	}
}

// TestWatchOneGoroutineInOrder: watchers are called one at a time, in the
// order of the changes, and stop when told to or when the node closes.
func TestWatchOneGoroutineInOrder(t *testing.T) {
	before := runtime.NumGoroutine()
	n, err := New(Config{ControlURL: "http://127.0.0.1:1", Port: -1, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	var inCall, overlaps atomic.Int32
	var mu sync.Mutex
	var got []string
	stopped := make(chan struct{})
	record := func(ev Event) {
		if ev.State == Stopped {
			defer close(stopped)
		}
		if inCall.Add(1) > 1 {
			overlaps.Add(1)
		}
		time.Sleep(100 * time.Microsecond) // let callers race ahead
		mu.Lock()
		got = append(got, ev.AuthURL)
		mu.Unlock()
		inCall.Add(-1)
	}
	n.Watch(record)
	var stoppedCalls atomic.Int32
	stop := n.Watch(func(Event) { stoppedCalls.Add(1) })
	stop()
	stop() // twice is fine

	const changes = 200
	for i := range changes {
		n.setState(NeedsLogin, fmt.Sprint(i), nil)
	}
	// Concurrent notifications: no call overlaps another.
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 50 {
				n.notifyPeers()
			}
		})
	}
	wg.Wait()
	n.Close()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("no Stopped event after Close")
	}

	mu.Lock()
	defer mu.Unlock()
	if overlaps.Load() != 0 {
		t.Errorf("%d calls overlapped", overlaps.Load())
	}
	if stoppedCalls.Load() != 0 {
		t.Errorf("a stopped watcher was called %d times", stoppedCalls.Load())
	}
	next := 0
	for _, u := range got {
		if u == fmt.Sprint(next) {
			next++
		}
	}
	if next != changes {
		t.Errorf("saw the first %d of %d state changes in order: %q", next, changes, got)
	}
	// Stopped came last.
	if got[len(got)-1] != "" {
		t.Errorf("last event %q, want Stopped's", got[len(got)-1])
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines after Close, %d before", runtime.NumGoroutine(), before)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestWatchCloseFromCallback: a watcher may close the node.
func TestWatchCloseFromCallback(t *testing.T) {
	n, err := New(Config{ControlURL: "http://127.0.0.1:1", Port: -1, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	stopped := make(chan struct{})
	n.Watch(func(ev Event) {
		switch ev.State {
		case NeedsLogin:
			n.Close()
		case Stopped:
			close(stopped)
		}
	})
	n.setState(NeedsLogin, "u", nil)
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("no Stopped event after Close from a watcher")
	}
}
