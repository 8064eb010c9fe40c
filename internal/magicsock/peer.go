package magicsock

import (
	"cmp"
	"maps"
	"net/netip"
	"sync"
	"time"

	"github.com/microlink-go/microlink/internal/disco"
	"github.com/microlink-go/microlink/internal/key"
)

// timing holds the protocol's timers; tests shorten them.
type timing struct {
	heartbeat         time.Duration // ping bestAddr this often while active
	trustUDP          time.Duration // a pong makes its path trusted this long
	sessionActive     time.Duration // a peer is active this long after a send
	upgradeInterval   time.Duration // full ping round when latency is poor
	goodEnoughLatency time.Duration
	endpointsFresh    time.Duration // STUN again before call-me-maybe if older
	discoPingInterval time.Duration // minimum between pings to one endpoint
	// unheardPing is the minimum between pings to an endpoint, and
	// between pings through DERP, of a peer not heard from yet.
	unheardPing time.Duration
	// callMeMaybeInterval is the steady rate of call-me-maybe messages
	// handled per peer, after a burst of callMeMaybeBurst.
	callMeMaybeInterval time.Duration
	pingTimeout         time.Duration
	lossTimeout         time.Duration // least time a heartbeat may go unanswered
	restunMin           time.Duration
	restunMax           time.Duration
	stunTimeout         time.Duration // one probe set
	stunRetry           time.Duration // delay between tries
	fullReport          time.Duration // a full netcheck at least this often
	tick                time.Duration // maintenance loop period
}

var defaultTiming = timing{
	heartbeat:         3 * time.Second,
	trustUDP:          6500 * time.Millisecond,
	sessionActive:     45 * time.Second,
	upgradeInterval:   time.Minute,
	goodEnoughLatency: 5 * time.Millisecond,
	endpointsFresh:    27 * time.Second,
	discoPingInterval: 5 * time.Second,
	unheardPing:       time.Second,
	// A peer sends call-me-maybe when it starts discovery, at most about
	// once per discoPingInterval, and when a path stops answering.
	callMeMaybeInterval: time.Second,
	pingTimeout:         5 * time.Second,
	lossTimeout:         1200 * time.Millisecond,
	restunMin:           20 * time.Second,
	restunMax:           26 * time.Second,
	stunTimeout:         3 * time.Second,
	stunRetry:           100 * time.Millisecond,
	fullReport:          5 * time.Minute,
	tick:                time.Second,
}

// Peer is what the Conn needs to know about a peer from the netmap.
type Peer struct {
	Key       key.NodePublic
	DiscoKey  key.DiscoPublic
	Endpoints []netip.AddrPort
	HomeDERP  int
	Expired   bool
}

// Where a candidate endpoint came from.
const (
	fromNetmap = 1 << iota
	fromCallMeMaybe
	fromPing // source of a ping we received
)

// maxLearned bounds the endpoints learned from inbound pings per peer.
const maxLearned = 8

// candidate is one UDP address a peer might be reached at.
type candidate struct {
	from     int
	lastPing time.Time
	lastPong time.Time
	latency  time.Duration
}

// path is a peer's direct path as the send path reads it.
type path struct {
	addr  netip.AddrPort
	until time.Time // trusted until
}

// peer is the Conn's state for one netmap peer. Fields other than hot
// are guarded by Conn.mu.
type peer struct {
	key      key.NodePublic
	disco    key.DiscoPublic
	homeDERP int
	expired  bool

	cands map[netip.AddrPort]*candidate

	best        netip.AddrPort // zero if none
	bestLatency time.Duration
	bestUntil   time.Time
	bestSeenAs  netip.AddrPort // our address as the peer saw it on best

	// An unanswered heartbeat to best: when its latest ping (the
	// heartbeat or a retry) went out, zero if none, and how many retries
	// have followed the heartbeat.
	probeAt    time.Time
	probeTries int

	lastFullPing    time.Time
	lastDERPPing    time.Time // when a discovery ping last went through DERP
	lastHeartbeat   time.Time
	lastPong        time.Time
	lastPongFrom    netip.AddrPort
	recentPings     [8]seenPing // pings answered, to answer duplicates once
	recentNext      int
	derpRegion      int       // region a disco packet last arrived on
	cmmNext         time.Time // call-me-maybe rate limit: see allowCallMeMaybe
	lastCallMeMaybe time.Time // when we last sent the peer our endpoints
	// heard is set by the first disco message from the peer: it knows
	// this Conn's disco key.
	heard bool

	hot struct {
		sync.Mutex
		path
		lastSend time.Time
	}
}

type seenPing struct {
	tx  [disco.TxIDLen]byte
	src netip.AddrPort
}

func (p *peer) reachable() bool { return !p.expired && !p.disco.IsZero() }

// setBest records the direct path for the send path; Conn.mu is held.
func (p *peer) setBest(addr netip.AddrPort, latency time.Duration, until time.Time) {
	if addr != p.best {
		p.bestSeenAs = netip.AddrPort{}
	}
	p.best, p.bestLatency, p.bestUntil = addr, latency, until
	p.probeAt, p.probeTries = time.Time{}, 0
	p.hot.Lock()
	p.hot.addr, p.hot.until = addr, until
	p.hot.Unlock()
}

func (p *peer) lastSend() time.Time {
	p.hot.Lock()
	defer p.hot.Unlock()
	return p.hot.lastSend
}

// SetPeers replaces the set of peers. Path state of peers that stay,
// with the same disco key, is kept. It returns the keys of the peers that
// stay with a new disco key: they restarted (see isRestart).
func (c *Conn) SetPeers(peers []Peer) (restarted []key.NodePublic) {
	c.mu.Lock()
	defer c.mu.Unlock()
	next := make(map[key.NodePublic]*peer, len(peers))
	for _, np := range peers {
		p := c.peers[np.Key]
		if p == nil || p.disco != np.DiscoKey {
			if p != nil {
				c.sealer.Forget(p.disco)
				if isRestart(p.disco, np.DiscoKey) {
					restarted = append(restarted, np.Key)
				}
			}
			p = &peer{key: np.Key, cands: make(map[netip.AddrPort]*candidate)}
		}
		p.update(np)
		next[np.Key] = p
	}
	for k, p := range c.peers {
		if next[k] != p {
			c.sealer.Forget(p.disco)
		}
	}
	c.peers = next
	clear(c.byDisco)
	for _, p := range next {
		if p.reachable() {
			c.byDisco[p.disco] = p
		}
	}
	c.forgetStale()
	c.publishPeers()
	return restarted
}

// isRestart reports whether a peer whose disco key went from old to new
// restarted, as tailscaled judges it: a node makes a new disco key at
// every start. A key that appears or goes away says nothing.
func isRestart(old, new key.DiscoPublic) bool {
	return !old.IsZero() && !new.IsZero() && old != new
}

// UpdatePeers changes only the named peers: it removes those whose keys
// are in gone, then adds or updates those in upsert, keeping the path
// state of peers that stay with the same disco key. A netmap delta costs
// work in proportion to its size, not to the number of peers. It returns
// the keys of the peers in upsert that restarted, as SetPeers does.
func (c *Conn) UpdatePeers(upsert []Peer, gone []key.NodePublic) (restarted []key.NodePublic) {
	c.mu.Lock()
	defer c.mu.Unlock()
	membership := false
	for _, k := range gone {
		if p := c.peers[k]; p != nil {
			c.dropPeer(p)
			membership = true
		}
	}
	for _, np := range upsert {
		p := c.peers[np.Key]
		if p != nil && p.disco != np.DiscoKey {
			if isRestart(p.disco, np.DiscoKey) {
				restarted = append(restarted, np.Key)
			}
			c.dropPeer(p)
			p = nil
		}
		if p == nil {
			p = &peer{key: np.Key, cands: make(map[netip.AddrPort]*candidate)}
			c.peers[np.Key] = p
			membership = true
		}
		if c.byDisco[p.disco] == p {
			delete(c.byDisco, p.disco)
		}
		p.update(np)
		if p.reachable() {
			c.byDisco[p.disco] = p
		}
	}
	if membership {
		c.forgetStale()
		c.publishPeers()
	}
	return restarted
}

// update takes the netmap's view of the peer: keys, home region, expiry
// and the netmap's endpoints, keeping candidates learned otherwise.
// Conn.mu is held.
func (p *peer) update(np Peer) {
	p.disco = np.DiscoKey
	p.homeDERP = np.HomeDERP
	p.expired = np.Expired
	for ap, cd := range p.cands {
		cd.from &^= fromNetmap
		if cd.from == 0 {
			delete(p.cands, ap)
		}
	}
	for _, ap := range np.Endpoints {
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		if !ap.IsValid() || ap.Addr().Zone() != "" || ap.Addr() == DERPMagicIP || ap.Addr().IsUnspecified() {
			continue
		}
		cd := p.cands[ap]
		if cd == nil {
			cd = &candidate{}
			p.cands[ap] = cd
		}
		cd.from |= fromNetmap
	}
	if p.best.IsValid() && p.cands[p.best] == nil {
		p.setBest(netip.AddrPort{}, 0, time.Time{})
	}
}

// dropPeer removes p from the peer tables, but not its outstanding pings
// (see forgetStale). Conn.mu is held.
func (c *Conn) dropPeer(p *peer) {
	delete(c.peers, p.key)
	if c.byDisco[p.disco] == p {
		delete(c.byDisco, p.disco)
	}
	c.sealer.Forget(p.disco)
}

// forgetStale drops the outstanding pings of peers no longer in the
// table. Conn.mu is held.
func (c *Conn) forgetStale() {
	for tx, sp := range c.pings {
		if c.peers[sp.peer.key] != sp.peer {
			delete(c.pings, tx)
		}
	}
}

// publishPeers gives the send path a new snapshot of the peer table.
// Conn.mu is held.
func (c *Conn) publishPeers() {
	snap := maps.Clone(c.peers)
	c.peerSnap.Store(&snap)
}

// Status is a peer's current path.
type Status struct {
	// Addr is the direct UDP path, if one is chosen.
	Addr netip.AddrPort
	// Trusted reports whether Addr answered recently enough that data
	// goes only there.
	Trusted bool
	// DERPRegion is the peer's home region (or, without one, the region
	// it was last heard on), used whenever the direct path is not trusted.
	DERPRegion int
	// Latency is the latest round trip on the direct path.
	Latency time.Duration
	// LastPong is when any pong last arrived from the peer.
	LastPong time.Time
	// Endpoints are the candidate addresses known for the peer.
	Endpoints []netip.AddrPort
}

// PeerStatus returns the path state of peer.
func (c *Conn) PeerStatus(k key.NodePublic) (Status, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.peers[k]
	if p == nil {
		return Status{}, false
	}
	st := Status{
		Addr:       p.best,
		Trusted:    p.best.IsValid() && time.Now().Before(p.bestUntil),
		DERPRegion: cmp.Or(p.homeDERP, p.derpRegion),
		Latency:    p.bestLatency,
		LastPong:   p.lastPong,
	}
	for ap := range p.cands {
		st.Endpoints = append(st.Endpoints, ap)
	}
	insertionSort(st.Endpoints, func(a, b netip.AddrPort) bool { return a.Compare(b) < 0 })
	return st, true
}
