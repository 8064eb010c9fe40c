package magicsock

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microlink-go/microlink/internal/disco"
	"github.com/microlink-go/microlink/internal/key"
	"github.com/microlink-go/microlink/internal/stun"
	"github.com/microlink-go/microlink/internal/tailcfg"
)

// wgMsg is a stand-in WireGuard transport message.
const wgMsg = "\x04\x00\x00\x00payload"

func TestClassify(t *testing.T) {
	sealed := disco.NewSealer(key.NewPrivate(), 0).Seal(nil, key.NewPrivate().DiscoPublic(), &disco.Ping{})
	stunResp := stun.Response(nil, stun.NewTxID(), netip.MustParseAddrPort("192.0.2.1:1"))
	for _, tc := range []struct {
		name string
		b    []byte
		want int
	}{
		{"stun request", stun.Request(nil, stun.NewTxID()), classSTUN},
		{"stun response", stunResp, classSTUN},
		{"stun non-binding", append([]byte{0x00, 0x02}, stunResp[2:]...), classWireGuard},
		{"disco", sealed, classDisco},
		{"disco header only", sealed[:38], classDisco},
		{"disco too short", sealed[:37], classWireGuard},
		{"geneve disco", []byte{0, 0, 0x7a, 0x11, 0, 0, 1, 0}, classGeneve},
		{"geneve wireguard", []byte{0, 0, 0x7a, 0x12, 0, 0, 1, 0}, classGeneve},
		{"geneve bad reserved", []byte{0, 0, 0x7a, 0x12, 0, 0, 1, 1}, classWireGuard},
		{"wireguard initiation", append([]byte{1, 0, 0, 0}, make([]byte, 144)...), classWireGuard},
		{"wireguard transport", []byte(wgMsg), classWireGuard},
		{"empty", nil, classWireGuard},
	} {
		if got := classify(tc.b); got != tc.want {
			t.Errorf("%s: class %d, want %d", tc.name, got, tc.want)
		}
	}
}

func TestBetterAddr(t *testing.T) {
	ms := time.Millisecond
	pub1, pub2 := netip.MustParseAddrPort("198.51.100.1:1"), netip.MustParseAddrPort("203.0.113.1:1")
	priv := netip.MustParseAddrPort("192.168.1.2:1")
	lo := netip.MustParseAddrPort("127.0.0.1:1")
	v6 := netip.MustParseAddrPort("[2001:db8::1]:1")
	for _, tc := range []struct {
		a    netip.AddrPort
		al   time.Duration
		b    netip.AddrPort
		bl   time.Duration
		want bool
	}{
		{pub1, 10 * ms, netip.AddrPort{}, 0, true},
		{netip.AddrPort{}, 0, pub1, 10 * ms, false},
		{pub1, 10 * ms, pub1, 1 * ms, false},
		{pub1, 10 * ms, pub2, 20 * ms, true},
		{pub1, 20 * ms, pub2, 10 * ms, false},
		{pub1, 99 * ms, pub2, 100 * ms, false}, // 1 point: hysteresis
		{pub1, 98 * ms, pub2, 100 * ms, true},
		{priv, 12 * ms, pub1, 10 * ms, true},  // private +20 beats 17% slower
		{priv, 15 * ms, pub1, 10 * ms, false}, // but not 34% slower
		{lo, 11 * ms, priv, 10 * ms, true},
		{lo, 15 * ms, priv, 10 * ms, false},
		{v6, 10 * ms, pub1, 10 * ms, true},
		{pub1, 10 * ms, v6, 10 * ms, false},
	} {
		if got := betterAddr(tc.a, tc.al, tc.b, tc.bl); got != tc.want {
			t.Errorf("betterAddr(%v %v, %v %v) = %v", tc.a, tc.al, tc.b, tc.bl, got)
		}
	}
}

// pair returns two nodes that know each other, with home region 1.
func pair(t *testing.T) (a, b *node, r *fakeRelay) {
	r = newFakeRelay(t)
	a, b = newNode(t, r, Options{}), newNode(t, r, Options{})
	a.SetPeers([]Peer{b.asPeer(1)})
	b.SetPeers([]Peer{a.asPeer(1)})
	return a, b, r
}

func recv(t *testing.T, n *node) received {
	t.Helper()
	select {
	case m := <-n.wg:
		return m
	case <-time.After(2 * time.Second):
		t.Fatal("no WireGuard message arrived")
		return received{}
	}
}

func waitDirect(t *testing.T, from, to *node) {
	t.Helper()
	waitFor(t, 3*time.Second, "a trusted direct path", func() bool {
		from.Send(to.key.NodePublic(), []byte(wgMsg))
		st, _ := from.PeerStatus(to.key.NodePublic())
		return st.Trusted && st.Addr == to.udpTo
	})
}

func TestDirectPath(t *testing.T) {
	a, b, r := pair(t)
	bKey := b.key.NodePublic()

	// The first message goes through DERP (and to no direct path yet).
	if err := a.Send(bKey, []byte(wgMsg)); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, b); m.msg != wgMsg || m.src != DERPAddr(1) {
		t.Fatalf("first message %+v, want via DERP region 1", m)
	}
	// Discovery has started: disco pings prove the direct path.
	waitDirect(t, a, b)
	for len(b.wg) > 0 {
		<-b.wg
	}
	relayed := r.relayedTo(bKey)
	for i := range 5 {
		// Each message is numbered: a copy of wgMsg that the relay was
		// still carrying when trust arrived may come in between.
		msg := fmt.Sprintf("%s-%d", wgMsg, i)
		if err := a.Send(bKey, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		m := recv(t, b)
		for m.msg == wgMsg {
			m = recv(t, b)
		}
		if m.msg != msg || m.src != a.udpTo {
			t.Fatalf("message %q from %v, want %q direct from %v", m.msg, m.src, msg, a.udpTo)
		}
	}
	if n := r.relayedTo(bKey) - relayed; n > 2 { // a heartbeat round may relay a call-me-maybe
		t.Fatalf("%d packets relayed while direct", n)
	}
	st, _ := a.PeerStatus(bKey)
	if st.Latency <= 0 || st.LastPong.IsZero() || st.DERPRegion != 1 {
		t.Fatalf("status %+v", st)
	}
	// b learned a's address from a's pings.
	bst, _ := b.PeerStatus(a.key.NodePublic())
	found := false
	for _, ep := range bst.Endpoints {
		found = found || ep == a.udpTo
	}
	if !found {
		t.Fatalf("b's candidates %v lack %v", bst.Endpoints, a.udpTo)
	}
}

func TestFallbackToDERP(t *testing.T) {
	a, b, _ := pair(t)
	bKey := b.key.NodePublic()
	waitDirect(t, a, b)

	b.dropUDP.Store(true) // b's UDP goes dark
	waitFor(t, 3*time.Second, "the direct path to lose trust", func() bool {
		a.Send(bKey, []byte(wgMsg))
		st, _ := a.PeerStatus(bKey)
		return !st.Trusted
	})
	for len(b.wg) > 0 {
		<-b.wg
	}
	a.Send(bKey, []byte(wgMsg))
	if m := recv(t, b); m.src != DERPAddr(1) {
		t.Fatalf("message from %v, want DERP", m.src)
	}
	// Unanswered heartbeats end the path.
	waitFor(t, 3*time.Second, "the direct path to be dropped", func() bool {
		st, _ := a.PeerStatus(bKey)
		return !st.Addr.IsValid()
	})
	// When UDP comes back, so does the direct path.
	b.dropUDP.Store(false)
	waitDirect(t, a, b)
}

func TestPing(t *testing.T) {
	a, b, _ := pair(t)
	bKey := b.key.NodePublic()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	res, err := a.Ping(ctx, bKey)
	if err != nil {
		t.Fatal(err)
	}
	if res.Latency <= 0 || (!res.Direct() && res.DERPRegion != 1) {
		t.Fatalf("result %+v", res)
	}
	waitDirect(t, a, b)
	res, err = a.Ping(ctx, bKey)
	if err != nil || res.Addr != b.udpTo || res.PeerSaw != a.udpTo {
		t.Fatalf("direct ping = %+v, %v", res, err)
	}
	// Only DERP: the pong comes back through the relay.
	b.dropUDP.Store(true)
	c := newNode(t, nil, Options{})
	_ = c
	a.SetPeers([]Peer{{Key: bKey, DiscoKey: b.DiscoPublic(), HomeDERP: 1}})
	res, err = a.Ping(ctx, bKey)
	if err != nil || res.Direct() || res.DERPRegion != 1 || res.PeerSaw != DERPAddr(1) {
		t.Fatalf("DERP ping = %+v, %v", res, err)
	}
}

func TestUnreachablePeers(t *testing.T) {
	r := newFakeRelay(t)
	a := newNode(t, r, Options{})
	expired, noDisco, unknown := key.NewPrivate().NodePublic(), key.NewPrivate().NodePublic(), key.NewPrivate().NodePublic()
	a.SetPeers([]Peer{
		{Key: expired, DiscoKey: key.NewPrivate().DiscoPublic(), HomeDERP: 1, Expired: true},
		{Key: noDisco, HomeDERP: 1},
	})
	ctx := context.Background()
	for _, tc := range []struct {
		k    key.NodePublic
		want error
	}{{expired, ErrExpired}, {noDisco, ErrNoDisco}, {unknown, ErrUnknownPeer}} {
		if err := a.Send(tc.k, []byte(wgMsg)); !errors.Is(err, tc.want) {
			t.Errorf("Send: %v, want %v", err, tc.want)
		}
		if _, err := a.Ping(ctx, tc.k); !errors.Is(err, tc.want) {
			t.Errorf("Ping: %v, want %v", err, tc.want)
		}
	}
	if n := r.relayedTo(expired) + r.relayedTo(noDisco); n != 0 {
		t.Fatalf("%d packets relayed to unreachable peers", n)
	}
}

// TestSendDirectAllocs: sending to a trusted direct path allocates
// nothing. testing.AllocsPerRun counts the allocations of the whole
// process, so nothing else may allocate meanwhile: the receiving node
// only counts what arrives (the usual test hook copies each message into
// a string), and no heartbeat runs. Otherwise, whenever the measuring
// goroutine waits in a send (a loaded machine, -race), the receiver's
// copies of the messages it sent count as its own.
func TestSendDirectAllocs(t *testing.T) {
	tm := fastTiming
	tm.trustUDP = time.Minute  // no trust lapse during the measurement
	tm.heartbeat = time.Minute // and no pings
	r := newFakeRelay(t)
	a := newNodeTiming(t, r, Options{}, tm)
	var direct atomic.Int64
	b := newNodeTiming(t, r, Options{ReceiveWireGuard: func(msg []byte, src netip.AddrPort) {
		if src == a.udpTo {
			direct.Add(1)
		}
	}}, tm)
	a.SetPeers([]Peer{b.asPeer(1)})
	b.SetPeers([]Peer{a.asPeer(1)})
	bKey := b.key.NodePublic()
	waitFor(t, 3*time.Second, "a trusted direct path", func() bool {
		a.Send(bKey, []byte(wgMsg))
		st, _ := a.PeerStatus(bKey)
		return st.Trusted && st.Addr == b.udpTo
	})
	msg := []byte(wgMsg)
	relayed, before := r.relayedTo(bKey), direct.Load()
	n := testing.AllocsPerRun(200, func() {
		if err := a.Send(bKey, msg); err != nil {
			t.Fatal(err)
		}
	})
	if n != 0 {
		t.Fatalf("direct Send allocates %v times", n)
	}
	// Corked, the messages are held and sent together.
	n = testing.AllocsPerRun(100, func() {
		a.Cork()
		for range 10 {
			if err := a.Send(bKey, msg); err != nil {
				t.Fatal(err)
			}
		}
		a.Uncork()
	})
	if n != 0 {
		t.Fatalf("a corked burst of direct Sends allocates %v times", n)
	}
	if got := r.relayedTo(bKey); got != relayed {
		t.Fatalf("%d messages relayed during the measurement: not the direct path", got-relayed)
	}
	waitFor(t, 2*time.Second, "messages over the direct path", func() bool { return direct.Load() > before })
}

func TestCloseStopsGoroutines(t *testing.T) {
	r := newFakeRelay(t)
	checkGoroutines(t, func() {
		a, b := newNode(t, r, Options{}), newNode(t, r, Options{})
		a.SetPeers([]Peer{b.asPeer(1)})
		b.SetPeers([]Peer{a.asPeer(1)})
		waitDirect(t, a, b)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		b.dropUDP.Store(true)
		r.mu.Lock()
		delete(r.conns, b.key.NodePublic()) // no pong will come
		r.mu.Unlock()
		go func() { _, err := a.Ping(ctx, b.key.NodePublic()); done <- err }()
		time.Sleep(20 * time.Millisecond)
		a.Close()
		b.Close()
		if err := <-done; !errors.Is(err, ErrClosed) {
			t.Errorf("Ping after Close: %v", err)
		}
		cancel()
		if err := a.Send(b.key.NodePublic(), []byte(wgMsg)); err == nil {
			t.Error("Send after Close succeeded")
		}
		if err := a.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
	})
}

func TestOwnDERPClientStops(t *testing.T) {
	closed, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	port := closed.Addr().(*net.TCPAddr).Port
	closed.Close() // connections to it are refused
	checkGoroutines(t, func() {
		c, err := newConn(Options{DiscoKey: key.NewPrivate(), NodeKey: key.NewPrivate(), BindIPv4: netip.MustParseAddr("127.0.0.1"), DisableIPv6: true}, fastTiming)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDERPMap(&tailcfg.DERPMap{Regions: map[int]*tailcfg.DERPRegion{1: {RegionID: 1, Nodes: []*tailcfg.DERPNode{
			{Name: "1a", RegionID: 1, HostName: "derp.invalid", IPv4: "127.0.0.1", IPv6: "none", DERPPort: port, STUNPort: -1},
		}}}})
		waitFor(t, 2*time.Second, "a home region", func() bool { return c.HomeDERP() == 1 })
		if nodes := c.derpNodes(1); len(nodes) != 1 || nodes[0].DERPPort != port || nodes[0].IPv4 != "127.0.0.1" {
			t.Fatalf("DERP nodes %+v", nodes)
		}
		time.Sleep(50 * time.Millisecond) // let it try to connect
		c.Close()
	})
}

func TestPortInUse(t *testing.T) {
	busy, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	port := uint16(busy.LocalAddr().(*net.UDPAddr).Port)
	r := newFakeRelay(t)
	a := newNode(t, r, Options{Port: port})
	if a.LocalPort() == port || a.LocalPort() == 0 {
		t.Fatalf("port %d, want a free one other than %d", a.LocalPort(), port)
	}
	b := newNode(t, r, Options{})
	a.SetPeers([]Peer{b.asPeer(1)})
	b.SetPeers([]Peer{a.asPeer(1)})
	waitDirect(t, a, b)
}

func TestNetmapEndpointsFiltered(t *testing.T) {
	a := newNode(t, nil, Options{DERP: &captureDERP{sent: make(chan relayed, 16)}})
	k := key.NewPrivate().NodePublic()
	good := netip.MustParseAddrPort("127.0.0.1:5")
	a.SetPeers([]Peer{{Key: k, DiscoKey: key.NewPrivate().DiscoPublic(), Endpoints: []netip.AddrPort{
		good, DERPAddr(1), netip.MustParseAddrPort("0.0.0.0:5"), netip.MustParseAddrPort("[fe80::1%eth0]:5"), netip.MustParseAddrPort("[::ffff:127.0.0.1]:5"),
	}}})
	st, _ := a.PeerStatus(k)
	if len(st.Endpoints) != 1 || st.Endpoints[0] != good {
		t.Fatalf("candidates %v", st.Endpoints)
	}
}

// TestWriteUDP: a datagram to any UDP address, outside peer paths, reaches
// it as WireGuard; DERP addresses are refused.
func TestWriteUDP(t *testing.T) {
	r := newFakeRelay(t)
	a, b := newNode(t, r, Options{}), newNode(t, r, Options{})
	if err := a.WriteUDP([]byte("\x03\x00\x00\x00cookie"), b.udpTo); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-b.wg:
		if got.msg != "\x03\x00\x00\x00cookie" || got.src != a.udpTo {
			t.Fatalf("got %q from %v", got.msg, got.src)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("nothing arrived")
	}
	if err := a.WriteUDP([]byte("x"), DERPAddr(900)); !errors.Is(err, ErrNotUDP) {
		t.Fatalf("DERP address: %v", err)
	}
}
