package wireguard

import (
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/microlink-go/microlink/internal/key"
)

// Config configures a Device.
type Config struct {
	// PrivateKey is the static key of the device (the node key).
	PrivateKey key.Private

	// Send hands a WireGuard message for peer to the transport. msg is
	// valid only during the call.
	Send func(peer key.NodePublic, msg []byte) error

	// Deliver receives a decrypted inner IP packet from peer. ipPacket is
	// valid only during the call.
	Deliver func(peer key.NodePublic, ipPacket []byte)

	// SendCookieReply, if set, sends a cookie reply back to the source of
	// a handshake message that was refused because the device is under
	// load. src is what the transport passed to ReceiveFrom. Without it
	// such messages are dropped silently.
	SendCookieReply func(src []byte, msg []byte) error

	// Logger receives diagnostics; nil discards them.
	Logger *slog.Logger

	// Now returns the current time; nil means time.Now. Tests use it to
	// move the protocol clock, then call EvaluateTimers.
	Now func() time.Time

	// HandshakeLoadLimit is the number of handshake messages per second
	// above which the device is under load and demands mac2 cookies.
	// Zero means DefaultHandshakeLoadLimit.
	HandshakeLoadLimit int

	// UnderLoad, if set, replaces the device's own load detection.
	UnderLoad func() bool

	// HostOf, if set, returns the part of a source (as passed to
	// ReceiveFrom) that names the sending host, such as a UDP address
	// without its port. Under load, each host may send 20 handshake
	// messages a second (bursts of 5). Nil means the whole source. It
	// must not allocate or keep src.
	HostOf func(src []byte) []byte
}

// PeerConfig describes one peer: its static key and the prefixes it may
// send from and receive for.
type PeerConfig struct {
	Key        key.NodePublic
	AllowedIPs []netip.Prefix
}

// PeerStats are the counters of one peer.
type PeerStats struct {
	RxBytes, TxBytes     uint64 // WireGuard message bytes
	RxPackets, TxPackets uint64 // transport messages, keepalives included
	LastHandshake        time.Time
	HasSession           bool // a usable keypair exists now
}

// Stats are the totals of a device.
type Stats struct {
	Peers                    int // configured peers
	ActivePeers              int // peers holding handshake or session state
	HandshakesCompleted      uint64
	HandshakeInitiationsSent uint64
	CookieRepliesSent        uint64
	HandshakesDropped        uint64 // handshake messages dropped because the queue was full
	HandshakesRateLimited    uint64 // handshake messages over a host's rate under load
	PacketsIn, PacketsOut    uint64
	BytesIn, BytesOut        uint64
	Replays                  uint64 // transport messages rejected by the replay window
	Drops                    uint64 // all inbound and outbound messages dropped
}

// Errors returned by the sending methods.
var (
	ErrClosed         = errors.New("wireguard: device closed")
	ErrUnknownPeer    = errors.New("wireguard: unknown peer")
	ErrNoRoute        = errors.New("wireguard: no peer for destination")
	ErrInvalidPacket  = errors.New("wireguard: not an IP packet")
	ErrPacketTooLarge = errors.New("wireguard: packet too large")
)

// maxPacketSize is the largest inner packet a transport message can carry
// in one UDP datagram.
const maxPacketSize = 65535 - 8 - 40 - TransportHeaderSize - tagSize

// A Device is a WireGuard interface without a network: messages go out
// through Config.Send and come in through Receive.
type Device struct {
	send      func(key.NodePublic, []byte) error
	deliver   func(key.NodePublic, []byte)
	cookieOut func([]byte, []byte) error
	log       *slog.Logger
	now       func() time.Time
	static    key.Private
	staticPub key.Public
	pool      bufferPool

	// The handshake queue (see handshake.go).
	hsQueue   chan *handshakeJob
	hsFree    chan *handshakeJob
	hsJobs    atomic.Int32 // jobs allocated, at most handshakeQueueLen
	hsPending atomic.Int32 // jobs queued or being handled
	hostOf    func([]byte) []byte

	hsMu           sync.Mutex // guards the checker's secret, load accounting and the limiter
	checker        cookieChecker
	limiter        rateLimiter
	loadLimit      int
	underLoad      func() bool
	loadWindow     time.Time
	loadCount      int
	underLoadUntil time.Time

	mu     sync.RWMutex // guards the fields below; never held while taking peer.mu
	peers  map[key.NodePublic]*peer
	routes *routeTable
	index  map[uint32]indexEntry
	closed bool

	stats struct {
		handshakes, initiations, cookies atomic.Uint64
		pktsIn, pktsOut, bytesIn         atomic.Uint64
		bytesOut, replays, drops         atomic.Uint64
		handshakesDropped, rateLimited   atomic.Uint64
	}

	timerMu  sync.Mutex // serializes timer evaluation
	scratch  []*peer
	nextWake atomic.Int64 // UnixNano of the timer goroutine's next wake; 0 while evaluating
	kick     chan struct{}
	done     chan struct{}
	wg       sync.WaitGroup
}

// indexEntry is what a local index refers to: a handshake in progress
// (kp == nil) or a keypair.
type indexEntry struct {
	p  *peer
	kp *keypair
}

// NewDevice returns a running device with no peers.
func NewDevice(cfg Config) (*Device, error) {
	if cfg.PrivateKey.IsZero() {
		return nil, errors.New("wireguard: no private key")
	}
	if cfg.Send == nil || cfg.Deliver == nil {
		return nil, errors.New("wireguard: Send and Deliver are required")
	}
	d := &Device{
		send:      cfg.Send,
		deliver:   cfg.Deliver,
		cookieOut: cfg.SendCookieReply,
		log:       cfg.Logger,
		now:       cfg.Now,
		static:    cfg.PrivateKey,
		staticPub: cfg.PrivateKey.Public(),
		pool:      newBufferPool(),
		loadLimit: cfg.HandshakeLoadLimit,
		underLoad: cfg.UnderLoad,
		hostOf:    cfg.HostOf,
		hsQueue:   make(chan *handshakeJob, handshakeQueueLen),
		hsFree:    make(chan *handshakeJob, handshakeQueueLen),
		peers:     make(map[key.NodePublic]*peer),
		index:     make(map[uint32]indexEntry),
		kick:      make(chan struct{}, 1),
		done:      make(chan struct{}),
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	if d.now == nil {
		d.now = time.Now
	}
	if d.loadLimit <= 0 {
		d.loadLimit = DefaultHandshakeLoadLimit
	}
	d.checker.keys = newMACKeys(d.staticPub)
	d.routes = newRouteTable(d.peers)
	d.wg.Add(2)
	go d.timerLoop()
	go d.handshakeLoop()
	return d, nil
}

// PublicKey returns the device's static public key.
func (d *Device) PublicKey() key.NodePublic { return key.NodePublic(d.staticPub) }

// SetPeers replaces the peer set. Peers whose key stays keep their
// handshake and session state; removed peers lose theirs.
func (d *Device) SetPeers(peers []PeerConfig) {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	next := make(map[key.NodePublic]*peer, len(peers))
	for _, pc := range peers {
		p := d.peers[pc.Key]
		if p == nil {
			p = &peer{d: d, key: pc.Key}
		}
		p.allowed = slices.Clone(pc.AllowedIPs)
		next[pc.Key] = p
	}
	var removed []*peer
	for k, p := range d.peers {
		if next[k] == nil {
			removed = append(removed, p)
		}
	}
	d.peers = next
	d.routes = newRouteTable(next)
	d.unlockAndRetire(removed)
}

// UpdatePeers changes only the named peers: it removes those whose keys
// are in gone, then adds or updates those in upsert. As with SetPeers,
// peers that stay keep their handshake and session state. Its cost is in
// proportion to the change, not to the number of peers.
func (d *Device) UpdatePeers(upsert []PeerConfig, gone []key.NodePublic) {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	rebuild := false
	var removed []*peer
	for _, k := range gone {
		p := d.peers[k]
		if p == nil {
			continue
		}
		rebuild = rebuild || !d.routes.remove(p)
		delete(d.peers, k)
		removed = append(removed, p)
	}
	for _, pc := range upsert {
		p := d.peers[pc.Key]
		switch {
		case p == nil:
			p = &peer{d: d, key: pc.Key}
			d.peers[pc.Key] = p
		case slices.Equal(p.allowed, pc.AllowedIPs):
			continue
		default:
			rebuild = rebuild || !d.routes.remove(p)
		}
		p.allowed = slices.Clone(pc.AllowedIPs)
		if !rebuild {
			d.routes.add(p)
		}
	}
	if rebuild {
		d.routes = newRouteTable(d.peers)
	}
	d.unlockAndRetire(removed)
}

// unlockAndRetire forgets the index entries of peers no longer in the
// table, releases d.mu, and then drops the removed peers' keys and
// sessions. d.mu is held.
func (d *Device) unlockAndRetire(removed []*peer) {
	if len(removed) > 0 {
		for i, e := range d.index {
			if d.peers[e.p.key] != e.p {
				delete(d.index, i)
			}
		}
	}
	d.mu.Unlock()
	for _, p := range removed {
		p.mu.Lock()
		p.removed = true
		p.dropStateLocked()
		p.mu.Unlock()
	}
}

// SendPacket encrypts an IP packet for the peer whose allowed IPs hold
// its destination (longest prefix wins) and sends it. Without a session
// the packet is queued and a handshake started.
func (d *Device) SendPacket(ipPacket []byte) error {
	_, dst, _, ok := packetAddrs(ipPacket)
	if !ok {
		d.stats.drops.Add(1)
		return ErrInvalidPacket
	}
	d.mu.RLock()
	p, closed := d.routes.lookup(dst), d.closed
	d.mu.RUnlock()
	if closed {
		return ErrClosed
	}
	if p == nil {
		d.stats.drops.Add(1)
		return ErrNoRoute
	}
	return p.send(ipPacket)
}

// HasRoute reports whether SendPacket has a peer for packets to dst.
func (d *Device) HasRoute(dst netip.Addr) bool {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.routes.lookup(dst) != nil
}

// SendTo is SendPacket with the peer chosen by the caller.
func (d *Device) SendTo(peerKey key.NodePublic, ipPacket []byte) error {
	d.mu.RLock()
	p, closed := d.peers[peerKey], d.closed
	d.mu.RUnlock()
	if closed {
		return ErrClosed
	}
	if p == nil {
		d.stats.drops.Add(1)
		return ErrUnknownPeer
	}
	return p.send(ipPacket)
}

// PeerStats returns the counters of a configured peer.
func (d *Device) PeerStats(peerKey key.NodePublic) (PeerStats, bool) {
	d.mu.RLock()
	p := d.peers[peerKey]
	d.mu.RUnlock()
	if p == nil {
		return PeerStats{}, false
	}
	s := PeerStats{
		RxBytes:   p.rxBytes.Load(),
		TxBytes:   p.txBytes.Load(),
		RxPackets: p.rxPackets.Load(),
		TxPackets: p.txPackets.Load(),
	}
	if ns := p.lastHandshake.Load(); ns != 0 {
		s.LastHandshake = time.Unix(0, ns)
	}
	now := d.now()
	p.mu.Lock()
	if p.st != nil {
		s.HasSession = p.st.current.usable(now)
	}
	p.mu.Unlock()
	return s, true
}

// Stats returns the device totals.
func (d *Device) Stats() Stats {
	d.mu.RLock()
	peers := make([]*peer, 0, len(d.peers))
	for _, p := range d.peers {
		peers = append(peers, p)
	}
	d.mu.RUnlock()
	s := Stats{
		Peers:                    len(peers),
		HandshakesCompleted:      d.stats.handshakes.Load(),
		HandshakeInitiationsSent: d.stats.initiations.Load(),
		CookieRepliesSent:        d.stats.cookies.Load(),
		HandshakesDropped:        d.stats.handshakesDropped.Load(),
		HandshakesRateLimited:    d.stats.rateLimited.Load(),
		PacketsIn:                d.stats.pktsIn.Load(),
		PacketsOut:               d.stats.pktsOut.Load(),
		BytesIn:                  d.stats.bytesIn.Load(),
		BytesOut:                 d.stats.bytesOut.Load(),
		Replays:                  d.stats.replays.Load(),
		Drops:                    d.stats.drops.Load(),
	}
	for _, p := range peers {
		p.mu.Lock()
		if p.st != nil {
			s.ActivePeers++
		}
		p.mu.Unlock()
	}
	return s
}

// Close stops the timer goroutine and forgets all keys. Later calls to
// the sending methods fail with ErrClosed and Receive drops everything.
func (d *Device) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	peers := d.peers
	d.peers = map[key.NodePublic]*peer{}
	d.routes = newRouteTable(d.peers)
	clear(d.index)
	d.mu.Unlock()
	close(d.done)
	d.wg.Wait()
	for _, p := range peers {
		p.mu.Lock()
		p.removed = true
		p.dropStateLocked()
		p.mu.Unlock()
	}
	// No peer is left to use the private key, and no goroutine of the
	// device runs: wipe it and the cookie secret.
	clear(d.static[:])
	d.hsMu.Lock()
	clear(d.checker.secret[:])
	d.hsMu.Unlock()
	return nil
}

// newIndex registers a fresh random local index for p's handshake,
// replacing the handshake's previous index. It fails if p is no longer
// configured.
func (d *Device) newIndex(p *peer, old uint32) (uint32, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed || d.peers[p.key] != p {
		return 0, false
	}
	if e, ok := d.index[old]; ok && e.p == p && e.kp == nil {
		delete(d.index, old)
	}
	for {
		i := randUint32()
		if _, used := d.index[i]; !used && i != 0 {
			d.index[i] = indexEntry{p: p}
			return i, true
		}
	}
}

// dropIndex removes index i if it refers to p's keypair kp (or p's
// handshake when kp is nil).
func (d *Device) dropIndex(i uint32, p *peer, kp *keypair) {
	d.mu.Lock()
	if e, ok := d.index[i]; ok && e.p == p && e.kp == kp {
		delete(d.index, i)
	}
	d.mu.Unlock()
}

func (d *Device) lookupIndex(i uint32) indexEntry {
	d.mu.RLock()
	e := d.index[i]
	d.mu.RUnlock()
	return e
}

// isUnderLoad counts a handshake message and reports whether the device
// should demand mac2: when more than loadLimit arrived within a second,
// or the handshake queue is filling up, and for a second after that.
// d.hsMu must be held.
func (d *Device) isUnderLoad(now time.Time) bool {
	if d.underLoad != nil {
		return d.underLoad()
	}
	if now.Sub(d.loadWindow) >= time.Second || now.Before(d.loadWindow) {
		d.loadWindow = now
		d.loadCount = 0
	}
	d.loadCount++
	if d.loadCount > d.loadLimit || len(d.hsQueue) >= underLoadQueue {
		d.underLoadUntil = now.Add(underLoadAfterTime)
	}
	return now.Before(d.underLoadUntil)
}

func (d *Device) kickAt(t time.Time) {
	n := t.UnixNano()
	if w := d.nextWake.Load(); w == 0 || n < w {
		select {
		case d.kick <- struct{}{}:
		default:
		}
	}
}
