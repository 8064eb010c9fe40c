package magicsock

import (
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microlink-go/microlink/internal/key"
)

var fastTiming = timing{
	heartbeat:           100 * time.Millisecond,
	trustUDP:            400 * time.Millisecond,
	sessionActive:       5 * time.Second,
	upgradeInterval:     time.Second,
	goodEnoughLatency:   5 * time.Millisecond,
	endpointsFresh:      time.Second,
	discoPingInterval:   100 * time.Millisecond,
	unheardPing:         100 * time.Millisecond,
	callMeMaybeInterval: 10 * time.Millisecond,
	pingTimeout:         300 * time.Millisecond,
	lossTimeout:         time.Second, // beyond trustUDP: tests that want loss probes set it
	restunMin:           200 * time.Millisecond,
	restunMax:           300 * time.Millisecond,
	stunTimeout:         500 * time.Millisecond,
	stunRetry:           20 * time.Millisecond,
	fullReport:          time.Minute,
	tick:                20 * time.Millisecond,
}

// fakeRelay is an in-memory DERP server for a set of Conns. Delivery is
// asynchronous, as with a real relay.
type fakeRelay struct {
	mu    sync.Mutex
	conns map[key.NodePublic]*Conn
	sent  map[key.NodePublic]int // packets relayed to each node
	q     chan relayed
	done  chan struct{}
	wg    sync.WaitGroup
}

type relayed struct {
	region   int
	src, dst key.NodePublic
	pkt      []byte
}

func newFakeRelay(t testing.TB) *fakeRelay {
	r := &fakeRelay{conns: map[key.NodePublic]*Conn{}, sent: map[key.NodePublic]int{}, q: make(chan relayed, 256), done: make(chan struct{})}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			select {
			case <-r.done:
				return
			case m := <-r.q:
				r.mu.Lock()
				c := r.conns[m.dst]
				r.mu.Unlock()
				if c != nil {
					c.ReceiveDERP(m.region, m.src, m.pkt)
				}
			}
		}
	}()
	t.Cleanup(func() { close(r.done); r.wg.Wait() })
	return r
}

func (r *fakeRelay) relayedTo(k key.NodePublic) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sent[k]
}

// fakeDERP is one node's connection to a fakeRelay.
type fakeDERP struct {
	r          *fakeRelay
	self       key.NodePublic
	home       atomic.Int32
	reconnects atomic.Int32
}

func (f *fakeDERP) Send(region int, dst key.NodePublic, pkt []byte) error {
	if region == 0 {
		region = 1
	}
	f.r.mu.Lock()
	f.r.sent[dst]++
	f.r.mu.Unlock()
	select {
	case f.r.q <- relayed{region, f.self, dst, append([]byte(nil), pkt...)}:
	default:
	}
	return nil
}

func (f *fakeDERP) SetHome(region int) { f.home.Store(int32(region)) }
func (f *fakeDERP) Close() error       { return nil }
func (f *fakeDERP) Reconnect()         { f.reconnects.Add(1) }

// node is a Conn under test with what it received.
type node struct {
	*Conn
	key   key.Private
	wg    chan received
	udpTo netip.AddrPort
}

type received struct {
	msg string
	src netip.AddrPort
}

func newNode(t testing.TB, r *fakeRelay, opts Options) *node {
	t.Helper()
	return newNodeTiming(t, r, opts, fastTiming)
}

func newNodeTiming(t testing.TB, r *fakeRelay, opts Options, tm timing) *node {
	t.Helper()
	n := &node{key: key.NewPrivate(), wg: make(chan received, 256)}
	opts.NodeKey = n.key
	opts.DiscoKey = key.NewPrivate()
	if !opts.BindIPv4.IsValid() {
		opts.BindIPv4 = netip.MustParseAddr("127.0.0.1")
	}
	if !opts.BindIPv6.IsValid() {
		opts.DisableIPv6 = true
	}
	if opts.ReceiveWireGuard == nil {
		opts.ReceiveWireGuard = func(msg []byte, src netip.AddrPort) {
			select {
			case n.wg <- received{string(msg), src}:
			default:
			}
		}
	}
	if opts.DERP == nil {
		opts.DERP = &fakeDERP{r: r, self: n.key.NodePublic()}
	}
	c, err := newConn(opts, tm)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	n.Conn = c
	n.udpTo = netip.AddrPortFrom(opts.BindIPv4, c.LocalPort())
	if r != nil {
		r.mu.Lock()
		r.conns[n.key.NodePublic()] = c
		r.mu.Unlock()
	}
	return n
}

func (n *node) asPeer(home int) Peer {
	return Peer{Key: n.key.NodePublic(), DiscoKey: n.DiscoPublic(), Endpoints: []netip.AddrPort{n.udpTo}, HomeDERP: home}
}

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// checkGoroutines fails t if, after f, more goroutines run than before.
func checkGoroutines(t *testing.T, f func()) {
	t.Helper()
	before := runtime.NumGoroutine()
	f()
	deadline := time.Now().Add(3 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("goroutines: %d before, %d after\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}
