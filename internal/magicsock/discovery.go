package magicsock

import (
	"crypto/rand"
	"net/netip"
	"slices"
	"time"

	"github.com/microlink-go/microlink/internal/disco"
	"github.com/microlink-go/microlink/internal/key"
)

// Why a ping was sent.
const (
	pingDiscovery = iota
	pingHeartbeat
	pingCLI
)

// sentPing is a disco ping waiting for its pong.
type sentPing struct {
	peer    *peer
	to      netip.AddrPort // UDP address or DERPAddr(region)
	at      time.Time
	purpose int
	result  chan<- PingResult // for Conn.Ping; buffered, first pong wins
}

// receiveDisco handles a disco packet from src. Over DERP, region is the
// region it arrived on and derpSrc the sender's node key.
func (c *Conn) receiveDisco(pkt []byte, src netip.AddrPort, region int, derpSrc key.NodePublic) {
	sender, ok := disco.Source(pkt)
	if !ok {
		return
	}
	c.mu.Lock()
	p := c.byDisco[sender]
	c.mu.Unlock()
	if p == nil {
		return // unknown sender: the netmap has not told us its key
	}
	m, ok := c.sealer.Open(pkt, sender)
	if !ok {
		return // sealed with a key we do not share, perhaps a stale one
	}
	c.mu.Lock()
	firstHeard := false
	defer func() {
		c.unlockAndFlush()
		if firstHeard && c.opts.OnPeerHeard != nil {
			c.opts.OnPeerHeard(p.key)
		}
	}()
	if c.closed || c.byDisco[sender] != p {
		return
	}
	firstHeard, p.heard = !p.heard, true
	if region != 0 {
		p.derpRegion = region
	}
	c.log.Debug("magicsock: disco in", "peer", p.key.ShortString(), "src", src, "msg", disco.Summary(m))
	switch m := m.(type) {
	case *disco.Ping:
		c.handlePing(p, m, src, region, derpSrc)
	case *disco.Pong:
		c.handlePong(p, m, src)
	case *disco.CallMeMaybe:
		if region == 0 || derpSrc != p.key {
			return // only valid over DERP from the peer's own node key
		}
		if !c.allowCallMeMaybe(p, time.Now()) {
			c.log.Debug("magicsock: call-me-maybe dropped: too many from the peer", "peer", p.key.ShortString())
			return
		}
		c.handleCallMeMaybe(p, m)
	}
}

// handlePing answers a ping on the path it arrived on and learns its UDP
// source as a candidate endpoint. Conn.mu is held.
func (c *Conn) handlePing(p *peer, m *disco.Ping, src netip.AddrPort, region int, derpSrc key.NodePublic) {
	// A UDP ping names its sender's node key; if that key's peer has this
	// disco key, it is the peer the address belongs to.
	if region == 0 && !m.NodeKey.IsZero() && m.NodeKey != p.key {
		if q := c.peers[m.NodeKey]; q != nil && q.disco == p.disco {
			p = q
		}
	}
	for _, s := range p.recentPings {
		if s.tx == m.TxID && s.src == src {
			return // duplicate: answered already
		}
	}
	p.recentPings[p.recentNext] = seenPing{m.TxID, src}
	p.recentNext = (p.recentNext + 1) % len(p.recentPings)

	if region == 0 {
		c.learnEndpoint(p, src)
	}
	pong := &disco.Pong{TxID: m.TxID, Src: src}
	if region != 0 {
		c.sendDiscoDERP(region, derpSrc, p.disco, pong)
		return
	}
	c.sendDiscoUDP(src, p.disco, pong)
}

// learnEndpoint adds the source of a ping as a candidate of p, keeping
// at most maxLearned of them.
func (c *Conn) learnEndpoint(p *peer, src netip.AddrPort) {
	if src.Addr() == DERPMagicIP {
		return
	}
	if cd := p.cands[src]; cd != nil {
		cd.from |= fromPing
		return
	}
	n := 0
	var oldest netip.AddrPort
	var oldestAt time.Time
	for ap, cd := range p.cands {
		if cd.from == fromPing {
			n++
			if !oldest.IsValid() || cd.lastPong.Before(oldestAt) {
				oldest, oldestAt = ap, cd.lastPong
			}
		}
	}
	if n >= maxLearned {
		delete(p.cands, oldest)
	}
	p.cands[src] = &candidate{from: fromPing}
}

// handlePong matches a pong to its ping and updates the path. Conn.mu is held.
func (c *Conn) handlePong(p *peer, m *disco.Pong, src netip.AddrPort) {
	sp := c.pings[m.TxID]
	if sp == nil || sp.peer != p {
		return
	}
	delete(c.pings, m.TxID)
	now := time.Now()
	latency := now.Sub(sp.at)
	p.lastPong = now
	p.lastPongFrom = sp.to

	isDERP := src.Addr() == DERPMagicIP
	if sp.result != nil {
		res := PingResult{Latency: latency, PeerSaw: m.Src}
		if isDERP {
			res.DERPRegion = int(src.Port())
		} else {
			res.Addr = sp.to
		}
		select {
		case sp.result <- res:
		default:
		}
	}
	if isDERP {
		return
	}
	cd := p.cands[sp.to]
	if cd == nil {
		return // no longer a candidate
	}
	cd.lastPong, cd.latency = now, latency
	until := now.Add(c.tm.trustUDP)
	wasTrusted := p.best.IsValid() && now.Before(p.bestUntil)
	switch {
	case sp.to == p.best:
		p.setBest(p.best, latency, until)
	case betterAddr(sp.to, latency, p.best, p.bestLatency) || now.After(p.bestUntil):
		if p.best != sp.to {
			c.log.Debug("magicsock: direct path", "peer", p.key.ShortString(), "addr", sp.to, "latency", latency)
		}
		p.setBest(sp.to, latency, until)
	default:
		return
	}
	p.bestSeenAs = m.Src
	if !wasTrusted && now.Sub(p.lastCallMeMaybe) > c.tm.discoPingInterval {
		// The peer may have proven this path with its own call-me-maybe
		// and pings before we sent it anything. Tell it our endpoints by
		// call-me-maybe too: it then holds them as such, and only then
		// does a withdrawal (see pathLost) end its trust in one.
		c.sendCallMeMaybe(p, now)
	}
}

// Bounds on what a peer's call-me-maybe messages can make the node do.
const (
	// maxCallMeMaybeEndpoints is how many candidates one call-me-maybe
	// adds at most: the first acceptable ones it lists.
	maxCallMeMaybeEndpoints = 32
	// callMeMaybeBurst is how many call-me-maybe messages from one peer
	// are handled back to back; beyond it, one per
	// timing.callMeMaybeInterval, and the rest are dropped.
	callMeMaybeBurst = 4
)

// allowCallMeMaybe reports whether a call-me-maybe from p may be handled
// now, and counts it if so. Conn.mu is held.
func (c *Conn) allowCallMeMaybe(p *peer, now time.Time) bool {
	iv := c.tm.callMeMaybeInterval
	next := p.cmmNext
	if next.Before(now) {
		next = now
	}
	if next.Sub(now) > (callMeMaybeBurst-1)*iv {
		return false
	}
	p.cmmNext = next.Add(iv)
	return true
}

// handleCallMeMaybe replaces the peer's call-me-maybe endpoints and pings
// every candidate at once. A best path that an earlier call-me-maybe
// listed and this one leaves out is no longer trusted: the peer is saying
// it cannot be reached there. Conn.mu is held.
func (c *Conn) handleCallMeMaybe(p *peer, m *disco.CallMeMaybe) {
	var buf [maxCallMeMaybeEndpoints]netip.AddrPort
	eps := buf[:0]
	for _, ap := range m.MyNumber {
		if len(eps) == maxCallMeMaybeEndpoints {
			break
		}
		if c.candidateOK(ap) && !slices.Contains(eps, ap) {
			eps = append(eps, ap)
		}
	}
	withdrawn := false
	for ap, cd := range p.cands {
		if cd.from&fromCallMeMaybe != 0 && ap == p.best && !slices.Contains(eps, ap) {
			withdrawn = true
		}
		cd.from &^= fromCallMeMaybe
		if cd.from == 0 {
			delete(p.cands, ap)
		}
	}
	if withdrawn {
		c.log.Debug("magicsock: peer withdrew its direct path", "peer", p.key.ShortString(), "addr", p.best)
		p.setBest(netip.AddrPort{}, 0, time.Time{})
	}
	for _, ap := range eps {
		cd := p.cands[ap]
		if cd == nil {
			cd = &candidate{}
			p.cands[ap] = cd
		}
		cd.from |= fromCallMeMaybe
	}
	if p.best.IsValid() && p.cands[p.best] == nil {
		p.setBest(netip.AddrPort{}, 0, time.Time{})
	}
	c.pingCandidates(p, time.Now(), true, pingDiscovery, nil)
}

// candidateOK reports whether a peer may name ap as one of its endpoints.
// A peer chooses what it sends in call-me-maybe, so addresses that would
// turn the node's pings and WireGuard messages toward something other
// than a peer are refused: the DERP placeholder (which stands for a relay
// region, not a UDP address), loopback (services on this host, unless the
// node itself is bound to loopback only), multicast and broadcast,
// link-local and unspecified addresses, and port 0.
func (c *Conn) candidateOK(ap netip.AddrPort) bool {
	a := ap.Addr()
	switch {
	case !ap.IsValid() || ap.Port() == 0 || a.Zone() != "":
		return false
	case a == DERPMagicIP:
		return false
	case a.IsUnspecified() || a.IsMulticast() || a.IsLinkLocalUnicast() || a == ipv4Broadcast:
		return false
	case a.IsLoopback():
		return c.loopbackOnly
	}
	return true
}

var ipv4Broadcast = netip.AddrFrom4([4]byte{255, 255, 255, 255})

// pingCandidates pings p's candidate endpoints, skipping those pinged in
// the last discoPingInterval (unheardPing for a peer not heard from yet)
// unless force is set. It reports whether any ping went out. Conn.mu is
// held.
func (c *Conn) pingCandidates(p *peer, now time.Time, force bool, purpose int, result chan<- PingResult) bool {
	if purpose != pingCLI {
		p.lastFullPing = now
	}
	interval := c.tm.discoPingInterval
	if !p.heard {
		interval = c.tm.unheardPing
	}
	sent := false
	for ap, cd := range p.cands {
		if !force && now.Sub(cd.lastPing) < interval {
			continue
		}
		cd.lastPing = now
		c.sendPing(p, ap, purpose, result)
		sent = true
	}
	return sent
}

// sendPing sends one disco ping to to (a UDP address or DERPAddr). Conn.mu
// is held.
func (c *Conn) sendPing(p *peer, to netip.AddrPort, purpose int, result chan<- PingResult) {
	var tx [disco.TxIDLen]byte
	rand.Read(tx[:])
	c.pings[tx] = &sentPing{peer: p, to: to, at: time.Now(), purpose: purpose, result: result}
	ping := &disco.Ping{TxID: tx, NodeKey: c.nodePub}
	if to.Addr() == DERPMagicIP {
		c.sendDiscoDERP(int(to.Port()), p.key, p.disco, ping)
		return
	}
	c.sendDiscoUDP(to, p.disco, ping)
}

// pingUnheardDERP pings p through DERP, at most every unheardPing, while
// p has not been heard from. Such a peer may not know our disco key yet
// (we may have just started, and control's news of it may still be on
// its way) and ignores our pings until it does; a ping through DERP
// reaches it even without a direct path, and its pong tells us the news
// came (see Options.OnPeerHeard). Conn.mu is held.
func (c *Conn) pingUnheardDERP(p *peer, now time.Time) {
	region := p.homeDERP
	if region == 0 {
		region = p.derpRegion
	}
	if p.heard || region == 0 || now.Sub(p.lastDERPPing) < c.tm.unheardPing {
		return
	}
	p.lastDERPPing = now
	c.sendPing(p, DERPAddr(region), pingDiscovery, nil)
}

// sendCallMeMaybe tells p over DERP where we can be reached. Conn.mu is held.
func (c *Conn) sendCallMeMaybe(p *peer, now time.Time) {
	if now.Sub(c.epTime) > c.tm.endpointsFresh {
		c.nc.nextRun = time.Time{} // STUN again soon
		c.wake()
	}
	if len(c.endpoints) == 0 {
		return
	}
	p.lastCallMeMaybe = now
	c.sendDiscoDERP(p.homeDERP, p.key, p.disco, c.callMeMaybe(netip.AddrPort{}))
}

// callMeMaybe lists our endpoints, leaving out except. Conn.mu is held.
func (c *Conn) callMeMaybe(except netip.AddrPort) *disco.CallMeMaybe {
	cmm := &disco.CallMeMaybe{MyNumber: make([]netip.AddrPort, 0, len(c.endpoints))}
	for _, ep := range c.endpoints {
		if ep.AddrPort != except {
			cmm.MyNumber = append(cmm.MyNumber, ep.AddrPort)
		}
	}
	return cmm
}

// outPkt is a disco packet queued while Conn.mu is held.
type outPkt struct {
	pkt    []byte
	udp    netip.AddrPort // if valid, send here; else over DERP
	region int
	node   key.NodePublic
}

// sendDiscoUDP queues m for dst. Conn.mu is held; unlockAndFlush sends.
func (c *Conn) sendDiscoUDP(dst netip.AddrPort, to key.DiscoPublic, m disco.Message) {
	pkt := c.sealer.Seal(make([]byte, 0, 128), to, m)
	c.outbox = append(c.outbox, outPkt{pkt: pkt, udp: dst})
}

// sendDiscoDERP queues m for node through region (0: its reverse route).
// Conn.mu is held; unlockAndFlush sends.
func (c *Conn) sendDiscoDERP(region int, node key.NodePublic, to key.DiscoPublic, m disco.Message) {
	pkt := c.sealer.Seal(make([]byte, 0, 128), to, m)
	c.outbox = append(c.outbox, outPkt{pkt: pkt, region: region, node: node})
}

// unlockAndFlush releases Conn.mu and then sends the queued disco
// packets, so no network write happens under the lock.
func (c *Conn) unlockAndFlush() {
	out := c.outbox
	c.outbox = nil
	c.mu.Unlock()
	for _, o := range out {
		var err error
		if o.udp.IsValid() {
			err = c.writeUDP(o.pkt, o.udp)
		} else {
			err = c.derp.Send(o.region, o.node, o.pkt)
		}
		if err != nil {
			c.log.Debug("magicsock: disco send", "udp", o.udp, "region", o.region, "err", err)
		}
	}
}

// heartbeat keeps active peers' direct paths proven and looks for better
// ones. It returns when the next heartbeat is due (zero if none is).
// Conn.mu is held.
func (c *Conn) heartbeat(now time.Time) (next time.Time) {
	// Heartbeats due this close together go out in one pass.
	slack := c.tm.heartbeat / 50
	for _, p := range c.peers {
		if !p.reachable() || now.Sub(p.lastSend()) > c.tm.sessionActive {
			continue
		}
		iv := c.tm.heartbeat
		if !p.heard {
			iv = c.tm.unheardPing // see pingUnheardDERP
		}
		if due := p.lastHeartbeat.Add(iv); now.Add(slack).Before(due) {
			next = earliest(next, due)
			continue
		}
		p.lastHeartbeat = now
		next = earliest(next, now.Add(iv))
		c.pingUnheardDERP(p, now)
		if p.best.IsValid() {
			if cd := p.cands[p.best]; cd != nil {
				cd.lastPing = now
			}
			c.sendPing(p, p.best, pingHeartbeat, nil)
			if p.probeAt.IsZero() && now.Before(p.bestUntil) {
				p.probeAt, p.probeTries = now, 0
			}
		}
		trusted := p.best.IsValid() && now.Before(p.bestUntil)
		if !trusted || p.lastFullPing.IsZero() ||
			(p.bestLatency > c.tm.goodEnoughLatency && now.Sub(p.lastFullPing) >= c.tm.upgradeInterval) {
			if c.pingCandidates(p, now, false, pingDiscovery, nil) {
				c.sendCallMeMaybe(p, now)
			}
		}
	}
	return next
}

// probeRetries is how many more pings follow an unanswered heartbeat
// before its path is taken as lost, so one lost packet is not enough.
const probeRetries = 2

// lossTimeout is how long the heartbeat to p's trusted path, with its
// retries, may go unanswered before the path is taken as lost. Paths with
// long round trips get proportionally longer.
func (c *Conn) lossTimeout(p *peer) time.Duration {
	return max(c.tm.lossTimeout, 4*p.bestLatency)
}

// checkProbes follows unanswered heartbeats to trusted paths: it retries
// them and ends the trust of a path none of whose pings came back and
// that brought no WireGuard traffic meanwhile (liveness.go). It
// returns when it next needs to run (zero if never). Conn.mu is held.
//
// Each ping has its share of the loss timeout to be answered, counted
// from when it went out: when this runs late (a loaded machine, a process
// that was stopped), the verdict waits for the retries rather than
// skipping them.
//
// Trust would otherwise last until trustUDP after the last pong, several
// seconds of traffic sent into a path that no longer carries it.
func (c *Conn) checkProbes(now time.Time) (next time.Time) {
	for _, p := range c.peers {
		if p.probeAt.IsZero() {
			continue
		}
		if !p.best.IsValid() || !now.Before(p.bestUntil) {
			p.probeAt = time.Time{} // no longer trusted: the ordinary timers apply
			continue
		}
		step := c.lossTimeout(p) / (probeRetries + 1)
		if due := p.probeAt.Add(step); now.Before(due) {
			next = earliest(next, due)
			continue
		}
		if p.probeTries == probeRetries {
			if c.arrivedSince(p.best, p.probeAt) {
				// The peer's traffic still comes this way: a burst
				// of loss took the pings, not the path.
				p.probeAt = time.Time{}
				continue
			}
			c.pathLost(p, now)
			continue
		}
		p.probeTries++
		p.probeAt = now
		c.sendPing(p, p.best, pingHeartbeat, nil)
		next = earliest(next, now.Add(step))
	}
	return next
}

// pathLost ends the trust in p's direct path, so data goes over DERP as
// well as to the path until a pong proves it again, and tells the peer
// over DERP our endpoints without the one it has been reaching us at, so
// that it too stops trusting that path rather than sending into it until
// its own trust runs out. Conn.mu is held.
func (c *Conn) pathLost(p *peer, now time.Time) {
	c.log.Debug("magicsock: direct path stopped answering", "peer", p.key.ShortString(), "addr", p.best)
	seenAs := p.bestSeenAs
	p.setBest(p.best, p.bestLatency, now)
	c.sendDiscoDERP(p.homeDERP, p.key, p.disco, c.callMeMaybe(seenAs))
}

// earliest returns the earlier of a and b, where zero means never.
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

// expirePings drops pings unanswered for pingTimeout. A lost ping to the
// best path that is no longer trusted ends that path. Conn.mu is held.
func (c *Conn) expirePings(now time.Time) {
	for tx, sp := range c.pings {
		if now.Sub(sp.at) < c.tm.pingTimeout {
			continue
		}
		delete(c.pings, tx)
		p := sp.peer
		if sp.to == p.best && now.After(p.bestUntil) {
			c.log.Debug("magicsock: direct path lost", "peer", p.key.ShortString(), "addr", p.best)
			p.setBest(netip.AddrPort{}, 0, time.Time{})
		}
	}
}
