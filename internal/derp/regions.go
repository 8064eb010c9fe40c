package derp

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/microlink-go/microlink/internal/bufpool"
	"github.com/microlink-go/microlink/internal/key"
)

// RegionsOptions configure Regions.
type RegionsOptions struct {
	// PrivateKey is the node's private key.
	PrivateKey key.Private
	// Logger receives logs; nil discards them.
	Logger *slog.Logger
	// Lookup returns a region's nodes in preference order, or none for a
	// region that is not in the current DERP map. It is called before a
	// region's first connection, to refuse regions not in the map, and
	// before every connection attempt, so DERP map changes take effect
	// on the next reconnect; a region that left the map is not dialled
	// again.
	Lookup func(regionID int) []Node
	// Receive is called with every packet relayed to us. pkt is valid
	// only during the call. Calls for different regions may run
	// concurrently. It should return quickly: the region's connection
	// is not read meanwhile.
	Receive func(region int, src key.NodePublic, pkt []byte)
	// IsPeer, if not nil, says whether a source key is a peer of the
	// node: only peers' reverse routes are kept. Any client of a relay
	// can send from as many keys as it likes. It is called for keys not
	// yet routed and must not call into Regions.
	IsPeer func(key.NodePublic) bool
	// OnPeerGone, if not nil, is called when a region's server reports
	// that a peer left it.
	OnPeerGone func(region int, k key.NodePublic)
	// OnConnected, if not nil, is called each time a connection to a
	// region comes up (with NotePreferred queued ahead of the packets
	// that wait), from that region's goroutine.
	OnConnected func(region int)
}

// ErrNoRoute is returned by Regions.Send for region 0 when no reverse
// route to the peer is known.
var ErrNoRoute = errors.New("derp: no region known for peer")

// ErrUnknownRegion is returned for a region that is not in the DERP map:
// no connection is opened to it.
var ErrUnknownRegion = errors.New("derp: region not in the DERP map")

// ErrQueueFull is returned by Regions.Send when the region's queue of
// packets waiting to be written is full: the packet is dropped.
var ErrQueueFull = errors.New("derp: region's send queue is full")

const (
	idleTimeout       = 60 * time.Second
	idleCheckInterval = 15 * time.Second
	minBackoff        = 250 * time.Millisecond
	maxBackoff        = 30 * time.Second
	// sendQueueLen is how many packets wait per region for its writer
	// while it connects or while the relay's TCP connection is slow.
	sendQueueLen = 64
	// sendBufSize and sendBufsIdle size the pool that queued packets are
	// copied into: a WireGuard message of a full 1280-byte packet fits.
	sendBufSize  = 1536
	sendBufsIdle = 32
	stableConn   = 10 * time.Second
	maxRoutes    = 4096 // reverse routes kept, whatever IsPeer says
)

// Regions keeps the node's DERP connections: one to its home region,
// reconnected whenever it drops, and others opened on demand to reach
// peers whose home is elsewhere and closed once idle. It remembers on
// which region each peer was last heard from, to answer it there.
type Regions struct {
	opts RegionsOptions
	log  *slog.Logger

	// Settings that tests shorten.
	dial        func(context.Context, []Node, Options) (*Client, error)
	idleTimeout time.Duration
	idleCheck   time.Duration

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	bufs     *bufpool.Pool // copies of queued packets
	inFlight atomic.Int64  // packets queued or being written

	mu     sync.Mutex
	closed bool
	home   int
	conns  map[int]*regionConn
	routes map[key.NodePublic]int // peer → region it was last heard on
}

// regionConn is the connection to one region, owned by two goroutines
// until its ctx is done: Regions.run dials, reads and redials, and
// Regions.write writes everything the node sends on the current
// connection: the queued packets, and the connection's own frames (Pong,
// NotePreferred), so that neither the reader nor SetHome's caller ever
// waits for a slow server.
type regionConn struct {
	id     int
	ctx    context.Context
	cancel context.CancelFunc

	lastActive atomic.Int64 // unix nanoseconds of the last packet sent or received
	redial     atomic.Bool  // set by Reconnect: dial again without waiting

	// queue holds packets for the writer. Send drops packets when it is
	// full rather than wait for the relay.
	queue chan queuedPacket

	// Frames of the connection's own waiting for the writer, which wake
	// (capacity 1) signals. They take no room in queue and go ahead of
	// the packets in it.
	wake   chan struct{}
	ctrlMu sync.Mutex
	pref   bool    // NotePreferred with the home region at the time of writing
	pong   [8]byte // the answer to the latest Ping of pongTo
	pongTo *Client // nil if no Pong waits

	// Guarded by Regions.mu.
	client *Client       // nil while connecting
	ready  chan struct{} // closed once client is set
}

// queuedPacket is a copy of a packet waiting in a region's queue.
type queuedPacket struct {
	dst key.NodePublic
	buf *[]byte // from Regions.bufs if its capacity is sendBufSize
	n   int
}

// NewRegions returns a Regions with no home region. Call SetHome to connect.
func NewRegions(opts RegionsOptions) *Regions {
	r := newRegions(opts)
	r.start()
	return r
}

func newRegions(opts RegionsOptions) *Regions {
	ctx, cancel := context.WithCancel(context.Background())
	return &Regions{
		opts:        opts,
		log:         logger(opts.Logger),
		dial:        Dial,
		idleTimeout: idleTimeout,
		idleCheck:   idleCheckInterval,
		ctx:         ctx,
		cancel:      cancel,
		conns:       make(map[int]*regionConn),
		routes:      make(map[key.NodePublic]int),
		bufs:        bufpool.New(sendBufsIdle, sendBufSize),
	}
}

func (r *Regions) start() {
	r.wg.Add(1)
	go r.reapIdle()
}

// SetHome makes regionID the home region: it connects to it and tells
// every open connection's server whether it is now home. 0 means no home.
func (r *Regions) SetHome(regionID int) {
	known := regionID == 0 || r.inMap(regionID)
	r.mu.Lock()
	if r.closed || r.home == regionID {
		r.mu.Unlock()
		return
	}
	if old := r.conns[r.home]; old != nil {
		old.lastActive.Store(time.Now().UnixNano()) // idle time counts from now
	}
	r.home = regionID
	if known && regionID != 0 && r.conns[regionID] == nil {
		r.startLocked(regionID)
	}
	conns := make([]*regionConn, 0, len(r.conns))
	for _, rc := range r.conns {
		conns = append(conns, rc)
	}
	r.mu.Unlock()
	for _, rc := range conns {
		r.notePreferred(rc)
	}
}

// Home returns the home region, or 0.
func (r *Regions) Home() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.home
}

// Connected reports whether a connection to regionID is up.
func (r *Regions) Connected(regionID int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	rc := r.conns[regionID]
	return rc != nil && rc.client != nil
}

// Send relays pkt to dst through regionID, the peer's home region, or,
// for regionID 0, through the region the peer was last heard on. If
// there is no connection to regionID yet, Send uses the peer's reverse
// route when that region is connected; otherwise it starts connecting. A
// region not in the DERP map is never dialled: Send uses the reverse
// route or fails with ErrUnknownRegion.
//
// Send does not wait for the relay: it queues a copy of pkt for the
// region's writer goroutine, and drops it with ErrQueueFull when the
// region's queue is full. It does not allocate once its buffer pool is
// warm.
func (r *Regions) Send(regionID int, dst key.NodePublic, pkt []byte) error {
	if len(pkt) > MaxPacketSize {
		return ErrPacketTooBig
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return ErrClosed
	}
	if regionID == 0 {
		id, ok := r.routes[dst]
		if !ok {
			r.mu.Unlock()
			return ErrNoRoute
		}
		regionID = id
	}
	rc := r.conns[regionID]
	if rc == nil {
		r.mu.Unlock()
		known := r.inMap(regionID)
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			return ErrClosed
		}
		if rc = r.conns[regionID]; rc == nil && known {
			rc = r.startLocked(regionID)
		}
	}
	if rc == nil || rc.client == nil {
		if id, ok := r.routes[dst]; ok {
			if alt := r.conns[id]; alt != nil && alt.client != nil {
				rc = alt
			}
		}
	}
	if rc == nil {
		r.mu.Unlock()
		return ErrUnknownRegion
	}
	qp := r.copyPacket(dst, pkt)
	select {
	case rc.queue <- qp:
	default:
		r.mu.Unlock()
		r.release(qp)
		return ErrQueueFull
	}
	r.mu.Unlock()
	rc.lastActive.Store(time.Now().UnixNano())
	return nil
}

// copyPacket copies pkt into a buffer for the queue.
func (r *Regions) copyPacket(dst key.NodePublic, pkt []byte) queuedPacket {
	r.inFlight.Add(1)
	var buf *[]byte
	if len(pkt) <= sendBufSize {
		buf = r.bufs.Get()
	} else {
		b := make([]byte, len(pkt))
		buf = &b
	}
	return queuedPacket{dst: dst, buf: buf, n: copy(*buf, pkt)}
}

// release returns qp's buffer to the pool.
func (r *Regions) release(qp queuedPacket) {
	if cap(*qp.buf) == sendBufSize {
		r.bufs.Put(qp.buf)
	}
	r.inFlight.Add(-1)
}

// write sends rc's queued packets over its current connection, waiting
// for one while the region connects, until rc.ctx is done. A packet the
// connection fails to write is dropped; the next one waits for the
// reconnection.
func (r *Regions) write(rc *regionConn) {
	defer r.wg.Done()
	defer func() {
		for {
			select {
			case qp := <-rc.queue:
				r.release(qp)
			default:
				return
			}
		}
	}()
	for {
		var qp queuedPacket
		select {
		case qp = <-rc.queue:
		case <-rc.wake:
			if c := r.waitClient(rc); c != nil {
				r.writeOwn(rc, c)
			}
			continue
		case <-rc.ctx.Done():
			return
		}
		c := r.waitClient(rc)
		if c == nil {
			r.release(qp)
			return
		}
		r.writeOwn(rc, c)
		if err := c.Send(qp.dst, (*qp.buf)[:qp.n]); err != nil {
			r.log.Debug("derp: send failed", "region", rc.id, "err", err)
		}
		r.release(qp)
	}
}

// writeOwn writes the connection's own frames that wait, if any, on c:
// a NotePreferred that says whether rc's region is home now (so the
// latest SetHome wins), and the answer to the server's latest Ping if
// it came on c.
func (r *Regions) writeOwn(rc *regionConn, c *Client) {
	rc.ctrlMu.Lock()
	pref, pong, pongTo := rc.pref, rc.pong, rc.pongTo
	rc.pref, rc.pongTo = false, nil
	rc.ctrlMu.Unlock()
	if pref {
		if err := c.NotePreferred(r.Home() == rc.id); err != nil {
			r.log.Debug("derp: NotePreferred failed", "region", rc.id, "err", err)
		}
	}
	if pongTo == c {
		if err := c.SendPong(pong); err != nil {
			r.log.Debug("derp: pong failed", "region", rc.id, "err", err)
		}
	}
}

// queueOwn hands rc's writer a frame of the connection's own, by f.
func (rc *regionConn) queueOwn(f func()) {
	rc.ctrlMu.Lock()
	f()
	rc.ctrlMu.Unlock()
	select {
	case rc.wake <- struct{}{}:
	default:
	}
}

// waitClient returns rc's connection once it is up, or nil when rc.ctx
// is done first.
func (r *Regions) waitClient(rc *regionConn) *Client {
	for {
		r.mu.Lock()
		c, ready := rc.client, rc.ready
		r.mu.Unlock()
		if c == nil {
			select {
			case <-ready:
				continue
			case <-rc.ctx.Done():
				return nil
			}
		}
		select {
		case <-c.Done():
		default:
			return c
		}
		// c failed; run is about to replace it.
		select {
		case <-rc.ctx.Done():
			return nil
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Reconnect closes every open connection and dials its region again at
// once. Call it when the host's addresses change: a connection made from
// an address the host no longer has would otherwise hang until its read
// timeout.
func (r *Regions) Reconnect() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rc := range r.conns {
		if rc.client != nil {
			rc.redial.Store(true)
			rc.client.Close()
		}
	}
}

// Latency measures the round-trip time to regionID's server with a DERP
// ping, connecting to the region first if needed.
func (r *Regions) Latency(ctx context.Context, regionID int) (time.Duration, error) {
	if !r.inMap(regionID) {
		return 0, ErrUnknownRegion
	}
	for {
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			return 0, ErrClosed
		}
		rc := r.conns[regionID]
		if rc == nil {
			rc = r.startLocked(regionID)
		}
		c, ready := rc.client, rc.ready
		r.mu.Unlock()
		if c != nil {
			return c.Ping(ctx)
		}
		select {
		case <-ready:
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-rc.ctx.Done():
			return 0, ErrClosed
		}
	}
}

// Close closes all connections and stops all goroutines.
func (r *Regions) Close() error {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.cancel()
	r.wg.Wait()
	return nil
}

// inMap reports whether regionID is in the DERP map, that is whether
// Lookup names nodes for it. r.mu must not be held: Lookup calls out.
func (r *Regions) inMap(regionID int) bool {
	return regionID != 0 && r.opts.Lookup != nil && len(r.opts.Lookup(regionID)) > 0
}

// startLocked creates the connection for regionID and its goroutine.
func (r *Regions) startLocked(regionID int) *regionConn {
	ctx, cancel := context.WithCancel(r.ctx)
	rc := &regionConn{id: regionID, ctx: ctx, cancel: cancel, ready: make(chan struct{}),
		queue: make(chan queuedPacket, sendQueueLen), wake: make(chan struct{}, 1)}
	rc.lastActive.Store(time.Now().UnixNano())
	r.conns[regionID] = rc
	r.wg.Add(2)
	go r.run(rc)
	go r.write(rc)
	return rc
}

// removeLocked forgets rc, if it is still the region's connection, and
// the routes through its region.
func (r *Regions) removeLocked(rc *regionConn) {
	if r.conns[rc.id] != rc {
		return
	}
	delete(r.conns, rc.id)
	r.forgetRoutesLocked(rc.id)
	rc.cancel()
}

func (r *Regions) forgetRoutesLocked(regionID int) {
	for k, id := range r.routes {
		if id == regionID {
			delete(r.routes, k)
		}
	}
}

// run dials rc's region, reads from it and redials after failures, with
// exponential backoff, until rc.ctx is done.
func (r *Regions) run(rc *regionConn) {
	defer r.wg.Done()
	defer func() {
		r.mu.Lock()
		r.removeLocked(rc)
		r.mu.Unlock()
	}()
	backoff := minBackoff
	for rc.ctx.Err() == nil {
		var nodes []Node
		if r.opts.Lookup != nil {
			nodes = r.opts.Lookup(rc.id)
		}
		if len(nodes) == 0 {
			r.log.Debug("derp: region not in the DERP map", "region", rc.id)
			return
		}
		c, err := r.dial(rc.ctx, nodes, Options{PrivateKey: r.opts.PrivateKey, Logger: r.opts.Logger, ReturnPings: true})
		if err != nil {
			r.log.Debug("derp: connect failed", "region", rc.id, "err", err, "retry", backoff)
			if !sleep(rc.ctx, jitter(backoff)) {
				return
			}
			backoff = min(2*backoff, maxBackoff)
			continue
		}
		r.log.Debug("derp: connected", "region", rc.id, "server", c.ServerPublicKey().ShortString())
		start := time.Now()
		restart := r.serve(rc, c)
		if time.Since(start) > stableConn {
			backoff = minBackoff
		}
		wait := jitter(backoff)
		if rc.redial.Swap(false) {
			// Closed by Reconnect: the network changed, not the server.
			wait, backoff = 0, minBackoff
		} else if restart.ReconnectIn > 0 || restart.TryFor > 0 {
			// The server said when it will be back: wait that long, then
			// retry at the shortest interval.
			wait = min(restart.ReconnectIn, maxBackoff)
			backoff = minBackoff
		} else {
			backoff = min(2*backoff, maxBackoff)
		}
		if !sleep(rc.ctx, wait) {
			return
		}
	}
}

// serve runs one connection until it fails or rc.ctx is done, and
// returns the last Restarting message the server sent.
func (r *Regions) serve(rc *regionConn, c *Client) (restart Restarting) {
	stop := context.AfterFunc(rc.ctx, func() { c.Close() })
	defer stop()
	defer c.Close()

	// NotePreferred waits for the writer before the connection is
	// visible to it, so it goes out ahead of any packet.
	r.notePreferred(rc)
	r.mu.Lock()
	if r.conns[rc.id] != rc {
		r.mu.Unlock()
		return
	}
	rc.client = c
	close(rc.ready)
	r.mu.Unlock()

	if r.opts.OnConnected != nil {
		r.opts.OnConnected(rc.id)
	}

	defer func() {
		r.mu.Lock()
		rc.client = nil
		rc.ready = make(chan struct{})
		r.forgetRoutesLocked(rc.id)
		r.mu.Unlock()
	}()
	var problem string // the server's last health problem
	for {
		m, err := c.Recv()
		if err != nil {
			if rc.ctx.Err() == nil {
				r.log.Debug("derp: connection lost", "region", rc.id, "err", err)
			}
			return
		}
		switch m := m.(type) {
		case *ReceivedPacket:
			rc.lastActive.Store(time.Now().UnixNano())
			r.noteRoute(m.Source, rc.id)
			if r.opts.Receive != nil {
				r.opts.Receive(rc.id, m.Source, m.Data)
			}
		case PeerGone:
			r.mu.Lock()
			if r.routes[m.Key] == rc.id {
				delete(r.routes, m.Key)
			}
			r.mu.Unlock()
			if r.opts.OnPeerGone != nil {
				r.opts.OnPeerGone(rc.id, m.Key)
			}
		case Ping:
			rc.queueOwn(func() { rc.pong, rc.pongTo = m, c })
		case Restarting:
			restart = m
		case Health:
			// Servers may repeat their health often: log changes only.
			if m.Problem == problem {
				break
			}
			problem = m.Problem
			if problem != "" {
				r.log.Warn("derp: server reports a problem", "region", rc.id, "problem", problem)
			} else {
				r.log.Info("derp: server reports no problem any more", "region", rc.id)
			}
		}
	}
}

// noteRoute remembers that src was heard on regionID. A key not yet
// routed is added only if it is a peer, and at most maxRoutes keys are
// kept: one arbitrary route makes room for a new one.
func (r *Regions) noteRoute(src key.NodePublic, regionID int) {
	r.mu.Lock()
	id, known := r.routes[src]
	if known {
		if id != regionID {
			r.routes[src] = regionID
		}
		r.mu.Unlock()
		return
	}
	r.mu.Unlock()
	if r.opts.IsPeer != nil && !r.opts.IsPeer(src) {
		return
	}
	r.mu.Lock()
	if len(r.routes) >= maxRoutes {
		for k := range r.routes {
			delete(r.routes, k)
			break
		}
	}
	r.routes[src] = regionID
	r.mu.Unlock()
}

// notePreferred has rc's writer tell its server whether it is home. The
// writer reads the home region when it writes, so the latest answer is
// the last on the wire.
func (r *Regions) notePreferred(rc *regionConn) {
	rc.queueOwn(func() { rc.pref = true })
}

// reapIdle closes non-home connections that have been idle too long.
func (r *Regions) reapIdle() {
	defer r.wg.Done()
	t := time.NewTicker(r.idleCheck)
	defer t.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case now := <-t.C:
			r.mu.Lock()
			for id, rc := range r.conns {
				if id != r.home && now.Sub(time.Unix(0, rc.lastActive.Load())) > r.idleTimeout {
					r.log.Debug("derp: closing idle region", "region", id)
					r.removeLocked(rc)
				}
			}
			r.mu.Unlock()
		}
	}
}

// sleep waits d or until ctx is done, and reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// jitter returns d ± up to 25 %.
func jitter(d time.Duration) time.Duration {
	return d*3/4 + rand.N(d/2+1)
}
