package derp

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/microlink-go/microlink/internal/key"
)

// fakeRegions runs Regions against fake servers: every dial makes a new
// fakeServer and hands it to the test on servers.
type fakeRegions struct {
	*Regions
	t       *testing.T
	servers chan regionServer
	fail    chan int // region IDs whose next dial fails

	mu        sync.Mutex
	dials     map[int][]time.Time
	received  chan receivedPacket
	gone      chan key.NodePublic
	connected chan int     // regions whose connection came up
	unknown   map[int]bool // regions not in the DERP map
	// wrap, if set, wraps the client end of each new connection.
	wrap func(net.Conn) net.Conn
}

type regionServer struct {
	region int
	*fakeServer
}

type receivedPacket struct {
	region int
	src    key.NodePublic
	data   string
}

func newFakeRegions(t *testing.T) *fakeRegions {
	f := &fakeRegions{
		t:         t,
		servers:   make(chan regionServer, 16),
		fail:      make(chan int, 16),
		dials:     make(map[int][]time.Time),
		received:  make(chan receivedPacket, 16),
		gone:      make(chan key.NodePublic, 16),
		connected: make(chan int, 16),
		unknown:   make(map[int]bool),
	}
	f.Regions = newRegions(RegionsOptions{
		PrivateKey: key.NewPrivate(),
		Lookup: func(id int) []Node {
			f.mu.Lock()
			defer f.mu.Unlock()
			if f.unknown[id] {
				return nil
			}
			return []Node{{Name: "n", RegionID: id, HostName: "derp.invalid"}}
		},
		Receive: func(region int, src key.NodePublic, pkt []byte) {
			f.received <- receivedPacket{region, src, string(pkt)}
		},
		OnPeerGone: func(region int, k key.NodePublic) { f.gone <- k },
		OnConnected: func(region int) {
			select {
			case f.connected <- region:
			default:
			}
		},
	})
	f.Regions.dial = f.dial
	f.Regions.idleTimeout = 300 * time.Millisecond
	f.Regions.idleCheck = 50 * time.Millisecond
	f.Regions.start()
	t.Cleanup(func() { f.Close() })
	return f
}

func (f *fakeRegions) dial(ctx context.Context, nodes []Node, opts Options) (*Client, error) {
	if len(nodes) == 0 {
		f.mu.Lock()
		f.dials[0] = append(f.dials[0], time.Now())
		f.mu.Unlock()
		return nil, errors.New("no nodes")
	}
	id := nodes[0].RegionID
	f.mu.Lock()
	f.dials[id] = append(f.dials[id], time.Now())
	f.mu.Unlock()
	select {
	case bad := <-f.fail:
		if bad == id {
			return nil, errors.New("dial failed on purpose")
		}
		f.fail <- bad
	default:
	}
	cc, sc, err := dialPair()
	if err != nil {
		return nil, err
	}
	s := &fakeServer{priv: key.NewPrivate(), conn: sc, br: bufio.NewReader(sc)}
	f.mu.Lock()
	if f.wrap != nil {
		cc = f.wrap(cc)
	}
	f.mu.Unlock()
	go func() {
		if err := s.handshake(ServerInfo{Version: 2}); err != nil {
			f.t.Logf("fake server handshake: %v", err)
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	c, err := newClient(ctx, cc, bufio.NewReader(cc), key.NodePublic{}, opts)
	if err != nil {
		f.t.Logf("fake dial: %v", err)
		cc.Close()
		sc.Close()
		return nil, err
	}
	f.servers <- regionServer{id, s}
	return c, nil
}

// setInMap adds region to the DERP map or takes it out.
func (f *fakeRegions) setInMap(region int, in bool) {
	f.mu.Lock()
	f.unknown[region] = !in
	f.mu.Unlock()
}

func (f *fakeRegions) dialTimes(region int) []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.dials[region]...)
}

// nextServer waits for the next connection, which must be to region.
func (f *fakeRegions) nextServer(t *testing.T, region int) *fakeServer {
	t.Helper()
	select {
	case s := <-f.servers:
		t.Cleanup(func() { s.conn.Close() })
		if s.region != region {
			t.Fatalf("connected to region %d, want %d", s.region, region)
		}
		return s.fakeServer
	case <-time.After(5 * time.Second):
		t.Fatalf("no connection to region %d", region)
		return nil
	}
}

func (s *fakeServer) expectPreferred(t *testing.T, want bool) {
	t.Helper()
	p := s.readType(t, frameNotePreferred)
	if len(p) != 1 || (p[0] == 1) != want {
		t.Fatalf("NotePreferred %x, want %v", p, want)
	}
}

func (s *fakeServer) expectPacket(t *testing.T, dst key.NodePublic, data string) {
	t.Helper()
	p := s.readType(t, frameSendPacket)
	if len(p) < keyLen || key.NodePublic(p[:keyLen]) != dst || string(p[keyLen:]) != data {
		t.Fatalf("SendPacket %x, want to %v %q", p, dst, data)
	}
}

func (s *fakeServer) deliver(t *testing.T, src key.NodePublic, data string) {
	t.Helper()
	s.send(t, frameRecvPacket, append(append([]byte(nil), src[:]...), data...))
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestRegionsHomeAndPreferred(t *testing.T) {
	defer checkGoroutines(t)()
	f := newFakeRegions(t)
	f.SetHome(1)
	s1 := f.nextServer(t, 1)
	s1.expectPreferred(t, true)
	if f.Home() != 1 {
		t.Fatalf("Home = %d", f.Home())
	}
	select {
	case r := <-f.connected:
		if r != 1 || !f.Connected(1) {
			t.Fatalf("OnConnected(%d), Connected(1) = %v", r, f.Connected(1))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no OnConnected for the home region")
	}
	f.SetHome(2)
	s2 := f.nextServer(t, 2)
	s2.expectPreferred(t, true)
	s1.expectPreferred(t, false)
	f.Close()
}

func TestRegionsSendOnDemandAndReverseRoute(t *testing.T) {
	f := newFakeRegions(t)
	f.SetHome(1)
	s1 := f.nextServer(t, 1)
	s1.expectPreferred(t, true)
	waitFor(t, "home connected", func() bool { return f.Connected(1) })

	peer := key.NewPrivate().NodePublic()
	if err := f.Send(1, peer, []byte("via home")); err != nil {
		t.Fatal(err)
	}
	s1.expectPacket(t, peer, "via home")

	// A peer in region 3: the packet waits for the connection.
	if err := f.Send(3, peer, []byte("queued")); err != nil {
		t.Fatal(err)
	}
	s3 := f.nextServer(t, 3)
	s3.expectPreferred(t, false)
	s3.expectPacket(t, peer, "queued")

	// Another peer is heard on region 3; region 0 answers there.
	other := key.NewPrivate().NodePublic()
	if err := f.Send(0, other, []byte("x")); !errors.Is(err, ErrNoRoute) {
		t.Fatalf("Send with no route: %v", err)
	}
	s3.deliver(t, other, "hi")
	select {
	case got := <-f.received:
		if got != (receivedPacket{3, other, "hi"}) {
			t.Fatalf("received %+v", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("packet not delivered")
	}
	if err := f.Send(0, other, []byte("reply")); err != nil {
		t.Fatal(err)
	}
	s3.expectPacket(t, other, "reply")

	// Unconnected region 4 for a peer heard on 3: uses the reverse route.
	f.fail <- 4
	if err := f.Send(4, other, []byte("reverse")); err != nil {
		t.Fatal(err)
	}
	s3.expectPacket(t, other, "reverse")

	// PeerGone forgets the route.
	s3.send(t, framePeerGone, other[:])
	select {
	case k := <-f.gone:
		if k != other {
			t.Fatalf("PeerGone for %v", k)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("OnPeerGone not called")
	}
	waitFor(t, "route forgotten", func() bool { return errors.Is(f.Send(0, other, nil), ErrNoRoute) })
}

func TestRegionsQueueLimit(t *testing.T) {
	f := newFakeRegions(t)
	peer := key.NewPrivate().NodePublic()
	// Region 5 never connects while its dials fail.
	for range 8 {
		f.fail <- 5
	}
	var full bool
	// The writer holds one packet while it waits for the connection.
	for range sendQueueLen + 2 {
		if err := f.Send(5, peer, []byte("p")); errors.Is(err, ErrQueueFull) {
			full = true
		}
	}
	if !full {
		t.Fatalf("queue of a connecting region is unbounded")
	}
}

func TestRegionsIdleClose(t *testing.T) {
	f := newFakeRegions(t)
	f.SetHome(1)
	f.nextServer(t, 1)
	peer := key.NewPrivate().NodePublic()
	f.Send(3, peer, []byte("x"))
	s3 := f.nextServer(t, 3)
	s3.expectPacket(t, peer, "x")
	waitFor(t, "idle region closed", func() bool { return !f.Connected(3) })
	s3.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := readFrame(s3.br, 1<<20, nil); err == nil {
		t.Fatal("idle connection still open on the server side")
	}
	time.Sleep(3 * f.idleTimeout)
	if !f.Connected(1) {
		t.Fatal("home region closed for idleness")
	}
}

func TestRegionsReconnectWithBackoff(t *testing.T) {
	f := newFakeRegions(t)
	f.fail <- 1
	f.SetHome(1)
	s := f.nextServer(t, 1)
	s.expectPreferred(t, true)
	if n := len(f.dialTimes(1)); n != 2 {
		t.Fatalf("%d dials, want 2 (one failed)", n)
	}
	s.conn.Close() // server drops us
	s = f.nextServer(t, 1)
	s.expectPreferred(t, true)
	waitFor(t, "reconnected", func() bool { return f.Connected(1) })
	peer := key.NewPrivate().NodePublic()
	if err := f.Send(1, peer, []byte("again")); err != nil {
		t.Fatal(err)
	}
	s.expectPacket(t, peer, "again")
}

func TestRegionsReconnect(t *testing.T) {
	defer checkGoroutines(t)()
	f := newFakeRegions(t)
	f.fail <- 1 // raise the backoff: a plain reconnect would now wait 375 ms or more
	f.SetHome(1)
	s := f.nextServer(t, 1)
	s.expectPreferred(t, true)
	asked := time.Now()
	f.Reconnect()
	s2 := f.nextServer(t, 1)
	s2.expectPreferred(t, true)
	dials := f.dialTimes(1)
	if gap := dials[len(dials)-1].Sub(asked); gap > 200*time.Millisecond {
		t.Fatalf("redialed %v after Reconnect, want at once", gap)
	}
	s.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := s.conn.Read(make([]byte, 1)); err == nil {
		t.Fatal("old connection still open after Reconnect")
	}
	waitFor(t, "reconnected", func() bool { return f.Connected(1) })
	peer := key.NewPrivate().NodePublic()
	if err := f.Send(1, peer, []byte("after")); err != nil {
		t.Fatal(err)
	}
	s2.expectPacket(t, peer, "after")
	f.Close()
}

func TestRegionsRestarting(t *testing.T) {
	f := newFakeRegions(t)
	f.SetHome(1)
	s := f.nextServer(t, 1)
	s.expectPreferred(t, true)
	// Restarting: reconnect in 700 ms, try for 5 s.
	s.send(t, frameRestarting, []byte{0, 0, 0x02, 0xbc, 0, 0, 0x13, 0x88})
	time.Sleep(20 * time.Millisecond)
	closed := time.Now()
	s.conn.Close()
	f.nextServer(t, 1)
	dials := f.dialTimes(1)
	if gap := dials[len(dials)-1].Sub(closed); gap < 650*time.Millisecond || gap > 3*time.Second {
		t.Fatalf("reconnected %v after the restart, want about 700ms", gap)
	}
}

func TestRegionsLatency(t *testing.T) {
	f := newFakeRegions(t)
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := f.Latency(ctx, 7)
		done <- err
	}()
	s := f.nextServer(t, 7)
	p := s.readType(t, framePing)
	s.send(t, framePong, p)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestRegionsCloseStopsEverything(t *testing.T) {
	check := checkGoroutines(t)
	f := newFakeRegions(t)
	f.SetHome(1)
	s1 := f.nextServer(t, 1)
	f.Send(2, key.NodePublic{}, []byte("x"))
	s2 := f.nextServer(t, 2)
	for range 3 {
		f.fail <- 9
	}
	f.Send(9, key.NodePublic{}, []byte("x")) // stuck in backoff
	time.Sleep(50 * time.Millisecond)
	f.Close()
	if err := f.Send(1, key.NodePublic{}, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Send after Close: %v", err)
	}
	s1.conn.Close()
	s2.conn.Close()
	check()
}

func TestRegionsSendAllocs(t *testing.T) {
	f := newFakeRegions(t)
	f.SetHome(1)
	s := f.nextServer(t, 1)
	waitFor(t, "home connected", func() bool { return f.Connected(1) })
	go io.Copy(io.Discard, s.conn)
	dst := key.NewPrivate().NodePublic()
	pkt := make([]byte, 1280)
	// Each packet is written before the next is queued, so the pool
	// always has the buffer back: the steady state of a busy region.
	if n := testing.AllocsPerRun(200, func() {
		if err := f.Send(1, dst, pkt); err != nil {
			t.Fatal(err)
		}
		for f.inFlight.Load() != 0 {
			runtime.Gosched()
		}
	}); n != 0 {
		t.Fatalf("Regions.Send allocates %v times per packet", n)
	}
}

// TestRegionsOnlyMapRegions: regions that are not in the DERP map are
// never dialled, whatever asks for them, and a region that leaves the
// map is not redialled.
func TestRegionsOnlyMapRegions(t *testing.T) {
	check := checkGoroutines(t)
	f := newFakeRegions(t)
	peer := key.NewPrivate().NodePublic()
	for id := 1000; id < 1100; id++ {
		f.setInMap(id, false)
		if err := f.Send(id, peer, []byte("x")); !errors.Is(err, ErrUnknownRegion) {
			t.Fatalf("Send to region %d outside the map: %v", id, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := f.Latency(ctx, 1000); !errors.Is(err, ErrUnknownRegion) {
		t.Fatalf("Latency of a region outside the map: %v", err)
	}
	f.SetHome(1001)
	time.Sleep(50 * time.Millisecond)
	f.mu.Lock()
	dialled := len(f.dials)
	f.mu.Unlock()
	if dialled != 0 {
		t.Fatalf("dialled %d regions outside the map", dialled)
	}
	f.Regions.mu.Lock()
	conns := len(f.conns)
	f.Regions.mu.Unlock()
	if conns != 0 {
		t.Fatalf("%d connections kept for regions outside the map", conns)
	}

	// A peer heard on region 2 is still reached there when its home is
	// a region outside the map.
	f.SetHome(2)
	s2 := f.nextServer(t, 2)
	s2.expectPreferred(t, true)
	s2.deliver(t, peer, "hi")
	<-f.received
	if err := f.Send(1050, peer, []byte("reverse")); err != nil {
		t.Fatal(err)
	}
	s2.expectPacket(t, peer, "reverse")

	// Region 3 leaves the map while connected: once its connection
	// drops, it is not dialled again.
	other := key.NewPrivate().NodePublic()
	f.Send(3, other, []byte("x"))
	s3 := f.nextServer(t, 3)
	s3.expectPacket(t, other, "x")
	f.setInMap(3, false)
	s3.conn.Close()
	waitFor(t, "region 3 forgotten", func() bool {
		f.Regions.mu.Lock()
		defer f.Regions.mu.Unlock()
		return f.conns[3] == nil
	})
	time.Sleep(3 * minBackoff)
	if n := len(f.dialTimes(3)); n != 1 {
		t.Fatalf("region 3 dialled %d times, want once", n)
	}
	f.Close()
	s2.conn.Close()
	check()
}

// stallConn is a connection whose writes block while stalled, as against
// a server that stopped reading once the TCP buffers are full.
type stallConn struct {
	net.Conn
	mu      sync.Mutex
	stalled bool
	resume  chan struct{}
}

func (c *stallConn) stall() {
	c.mu.Lock()
	c.stalled, c.resume = true, make(chan struct{})
	c.mu.Unlock()
}

func (c *stallConn) unstall() {
	c.mu.Lock()
	if c.stalled {
		c.stalled = false
		close(c.resume)
	}
	c.mu.Unlock()
}

func (c *stallConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	stalled, resume := c.stalled, c.resume
	c.mu.Unlock()
	if stalled {
		<-resume
	}
	return c.Conn.Write(b)
}

// TestRegionsSlowServerStallsNoReader: the server's connection stops
// taking writes. The region's reader goes on delivering packets although
// the server pings it, and SetHome returns at once; once writes go
// through again, the pong and the latest NotePreferred follow.
func TestRegionsSlowServerStallsNoReader(t *testing.T) {
	f := newFakeRegions(t)
	var conn *stallConn
	f.mu.Lock()
	f.wrap = func(c net.Conn) net.Conn { conn = &stallConn{Conn: c}; return conn }
	f.mu.Unlock()
	f.SetHome(1)
	s := f.nextServer(t, 1)
	s.expectPreferred(t, true)
	f.mu.Lock()
	sc := conn
	f.mu.Unlock()
	sc.stall()
	t.Cleanup(sc.unstall)

	peer := key.NewPrivate().NodePublic()
	ping := [8]byte{1, 2, 3, 4, 5, 6, 7, 8}
	s.send(t, framePing, ping[:])
	s.deliver(t, peer, "after the ping")
	select {
	case p := <-f.received:
		if p.data != "after the ping" {
			t.Fatalf("received %q", p.data)
		}
	case <-time.After(time.Second):
		t.Fatal("the reader stalled behind its answer to a ping")
	}
	start := time.Now()
	f.SetHome(0)
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("SetHome waited %v for the stalled connection", d)
	}
	s.deliver(t, peer, "after SetHome")
	select {
	case <-f.received:
	case <-time.After(time.Second):
		t.Fatal("the reader stalled after SetHome")
	}

	sc.unstall()
	var gotPong, gotPref bool
	for !gotPong || !gotPref {
		switch ft, p := s.read(t); ft {
		case framePong:
			if [8]byte(p) != ping {
				t.Fatalf("pong %x, want %x", p, ping)
			}
			gotPong = true
		case frameNotePreferred:
			if len(p) != 1 || p[0] != 0 {
				t.Fatalf("NotePreferred %x after SetHome(0), want not home", p)
			}
			gotPref = true
		}
	}
}
