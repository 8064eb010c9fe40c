package magicsock

import (
	"context"
	"hash/fnv"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/microlink-go/microlink/internal/derp"
	"github.com/microlink-go/microlink/internal/stun"
	"github.com/microlink-go/microlink/internal/tailcfg"
)

// DefaultSTUNPort is the STUN port of a DERP node whose STUNPort is 0.
const DefaultSTUNPort = 3478

// Home-region hysteresis (spec 5.5).
const (
	homeKeepIfWithin   = 10 * time.Millisecond
	homeFrameRecent    = 8 * time.Second
	homeFrameKeepAlive = 120 * time.Second
)

// netcheckState is the STUN measurement state. Fields other than frames
// are guarded by Conn.mu.
type netcheckState struct {
	running   bool
	nextRun   time.Time
	forceFull bool
	lastFull  time.Time
	pending   map[stun.TxID]*stunProbe
	report    *report // in progress
	last      *report // last finished

	framesMu sync.Mutex
	frames   map[int]time.Time // last DERP frame per region
}

func (nc *netcheckState) init() {
	nc.pending = make(map[stun.TxID]*stunProbe)
	nc.frames = make(map[int]time.Time)
}

func (nc *netcheckState) noteDERPFrame(region int) {
	nc.framesMu.Lock()
	nc.frames[region] = time.Now()
	nc.framesMu.Unlock()
}

func (nc *netcheckState) lastFrame(region int) time.Time {
	nc.framesMu.Lock()
	defer nc.framesMu.Unlock()
	return nc.frames[region]
}

// report is the result of one round of STUN probes.
type report struct {
	start    time.Time
	latency  map[int]time.Duration // per region, best seen
	answered map[probeKey]bool
	global4  netip.AddrPort
	global6  netip.AddrPort
	progress chan struct{} // signalled (without blocking) on every answer

	// For NetReport: how many IPv4 servers answered, and whether they
	// saw different mapped addresses.
	v4Answers int
	v4Varies  bool
}

type probeKey struct {
	region int
	v6     bool
}

type stunProbe struct {
	key  probeKey
	sent time.Time
	rep  *report
}

// probe is one planned STUN request.
type probe struct {
	key   probeKey
	delay time.Duration
	dst   netip.AddrPort
}

// SetDERPMap sets the DERP map used for STUN, home selection and, when the
// Conn runs its own DERP client, the relays. It triggers a full netcheck.
func (c *Conn) SetDERPMap(m *tailcfg.DERPMap) {
	c.mu.Lock()
	c.derpMap = m
	c.nc.forceFull = true
	c.nc.nextRun = time.Time{}
	if c.home != 0 && (m == nil || m.Regions[c.home] == nil) {
		c.home = 0
	}
	c.mu.Unlock()
	c.wake()
}

// HomeDERP returns the current home region, 0 if none.
func (c *Conn) HomeDERP() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.home
}

// Endpoints returns the node's current endpoints.
func (c *Conn) Endpoints() []Endpoint {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.endpoints)
}

// RegionLatency returns the latencies measured by the last netcheck.
func (c *Conn) RegionLatency() map[int]time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nc.last == nil {
		return nil
	}
	return maps.Clone(c.nc.last.latency)
}

// derpNodes returns region's relay nodes for the DERP client.
func (c *Conn) derpNodes(region int) []derp.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.derpMap == nil || c.derpMap.Regions[region] == nil {
		return nil
	}
	var out []derp.Node
	for _, n := range c.derpMap.Regions[region].Nodes {
		if n == nil || n.STUNOnly {
			continue
		}
		out = append(out, derp.Node{
			Name: n.Name, RegionID: region, HostName: n.HostName, CertName: n.CertName,
			IPv4: n.IPv4, IPv6: n.IPv6, DERPPort: n.DERPPort, InsecureForTests: n.InsecureForTests,
		})
	}
	return out
}

// shouldNetcheck decides whether a netcheck starts now. Conn.mu is held.
func (c *Conn) shouldNetcheck(now time.Time, active bool) (bool, bool) {
	nc := &c.nc
	if nc.running || c.derpMap == nil || now.Before(nc.nextRun) {
		return false, false
	}
	if !active && !nc.forceFull && nc.last != nil && len(c.endpoints) > 0 {
		return false, false // idle: no periodic STUN
	}
	full := nc.forceFull || nc.last == nil || now.Sub(nc.lastFull) >= c.tm.fullReport
	nc.running, nc.forceFull = true, false
	return true, full
}

// plan lists the STUN probes of a netcheck. last is the previous report
// (nil if none); an incremental plan probes only the fastest regions of
// last and home. It may resolve host names, so Conn.mu is not held.
func (c *Conn) plan(dm *tailcfg.DERPMap, last *report, home int, full bool) []probe {
	ids := slices.Sorted(maps.Keys(dm.Regions))
	tries := map[int]int{}
	if full || last == nil {
		for _, id := range ids {
			tries[id] = 3
		}
	} else {
		byLatency := slices.Collect(maps.Keys(last.latency))
		insertionSort(byLatency, func(a, b int) bool {
			la, lb := last.latency[a], last.latency[b]
			return la < lb || la == lb && a < b
		})
		for i, id := range byLatency[:min(3, len(byLatency))] {
			tries[id] = 1
			if i < 2 {
				tries[id] = 2
			}
		}
		if home != 0 {
			tries[home] = 4
		}
	}
	var out []probe
	for _, id := range ids {
		r := dm.Regions[id]
		n := tries[id]
		if r == nil || r.NoMeasureNoHome || n == 0 {
			continue
		}
		var dst4, dst6 []netip.AddrPort
		for _, node := range r.Nodes {
			if node == nil || node.STUNPort < 0 {
				continue
			}
			a4, a6 := stunAddrs(node)
			dst4 = append(dst4, a4...)
			dst6 = append(dst6, a6...)
		}
		delay := c.tm.stunRetry
		if !full && last != nil {
			if l, ok := last.latency[id]; ok {
				delay = l * 6 / 5
			}
		}
		for _, dsts := range [][]netip.AddrPort{dst4, dst6} {
			for i := 0; i < n && len(dsts) > 0; i++ {
				dst := dsts[i%len(dsts)]
				out = append(out, probe{key: probeKey{id, dst.Addr().Is6()}, delay: time.Duration(i) * delay, dst: dst})
			}
		}
	}
	insertionSort(out, func(a, b probe) bool { return a.delay < b.delay })
	return out
}

// stunAddrs returns the STUN addresses of node. An empty IPv4 or IPv6
// field means that family comes from DNS on HostName; any other value that
// is not an address of the family (conventionally "none") disables it.
func stunAddrs(n *tailcfg.DERPNode) (v4, v6 []netip.AddrPort) {
	port := uint16(DefaultSTUNPort)
	if n.STUNPort > 0 {
		port = uint16(n.STUNPort)
	}
	if n.STUNTestIP != "" {
		if ip, err := netip.ParseAddr(n.STUNTestIP); err == nil {
			ap := netip.AddrPortFrom(ip.Unmap(), port)
			if ip.Unmap().Is4() {
				return []netip.AddrPort{ap}, nil
			}
			return nil, []netip.AddrPort{ap}
		}
	}
	if ip, err := netip.ParseAddr(n.IPv4); err == nil && ip.Is4() {
		v4 = append(v4, netip.AddrPortFrom(ip, port))
	}
	if ip, err := netip.ParseAddr(n.IPv6); err == nil && ip.Is6() {
		v6 = append(v6, netip.AddrPortFrom(ip, port))
	}
	if (n.IPv4 == "" || n.IPv6 == "") && n.HostName != "" {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		ips, _ := net.DefaultResolver.LookupNetIP(ctx, "ip", n.HostName)
		for _, ip := range ips {
			ip = ip.Unmap()
			switch {
			case ip.Is4() && n.IPv4 == "":
				v4 = append(v4, netip.AddrPortFrom(ip, port))
			case ip.Is6() && n.IPv6 == "":
				v6 = append(v6, netip.AddrPortFrom(ip, port))
			}
		}
	}
	return v4, v6
}

// runNetcheck sends the planned STUN probes from the Conn's sockets, waits
// for the answers and then updates the home region and endpoints.
func (c *Conn) runNetcheck(full bool) {
	defer c.wg.Done()
	c.mu.Lock()
	dm, last, home := c.derpMap, c.nc.last, c.home
	rep := &report{start: time.Now(), latency: map[int]time.Duration{}, answered: map[probeKey]bool{}, progress: make(chan struct{}, 1)}
	c.nc.report = rep
	c.mu.Unlock()
	probes := c.plan(dm, last, home, full)

	want := map[probeKey]bool{}
	for _, p := range probes {
		want[p.key] = true
	}
	deadline := time.NewTimer(c.tm.stunTimeout)
	defer deadline.Stop()
	start := time.Now()
	var buf [stun.RequestLen]byte
	for i, p := range probes {
		for wait := time.Until(start.Add(p.delay)); wait > 0; wait = time.Until(start.Add(p.delay)) {
			if c.allAnswered(rep, probes[i:]) {
				break // retries of answered probes are not needed
			}
			t := time.NewTimer(wait)
			select {
			case <-c.closing:
				t.Stop()
				c.finishNetcheck(rep, full, false)
				return
			case <-rep.progress:
			case <-t.C:
			}
			t.Stop()
		}
		tx := stun.NewTxID()
		c.mu.Lock()
		done := rep.answered[p.key]
		if !done {
			c.nc.pending[tx] = &stunProbe{key: p.key, sent: time.Now(), rep: rep}
		}
		c.mu.Unlock()
		if !done {
			c.writeUDP(stun.Request(buf[:0], tx), p.dst)
		}
	}
	poll := time.NewTicker(c.tm.stunRetry / 2)
	defer poll.Stop()
	for {
		c.mu.Lock()
		all := len(rep.answered) >= len(want)
		c.mu.Unlock()
		if all {
			break
		}
		select {
		case <-c.closing:
			c.finishNetcheck(rep, full, false)
			return
		case <-deadline.C:
			c.finishNetcheck(rep, full, true)
			return
		case <-poll.C:
		case <-rep.progress:
		}
	}
	c.finishNetcheck(rep, full, true)
}

// allAnswered reports whether every probe in ps is for a key that already
// has an answer.
func (c *Conn) allAnswered(rep *report, ps []probe) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range ps {
		if !rep.answered[p.key] {
			return false
		}
	}
	return true
}

// receiveSTUN records a binding response to one of our probes.
func (c *Conn) receiveSTUN(b []byte, src netip.AddrPort) {
	tx, addr, err := stun.ParseResponse(b)
	if err != nil {
		return
	}
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	sp := c.nc.pending[tx]
	if sp == nil {
		return
	}
	delete(c.nc.pending, tx)
	rep := sp.rep
	lat := now.Sub(sp.sent)
	if old, ok := rep.latency[sp.key.region]; !ok || lat < old {
		rep.latency[sp.key.region] = lat
	}
	rep.answered[sp.key] = true
	select {
	case rep.progress <- struct{}{}:
	default:
	}
	if addr.Addr().Is4() {
		rep.v4Answers++
		if rep.global4.IsValid() && rep.global4 != addr {
			rep.v4Varies = true
		}
		rep.global4 = addr
	} else {
		rep.global6 = addr
	}
}

// finishNetcheck applies a finished report: picks the home region and
// recomputes the endpoints, reporting changes outside the lock.
func (c *Conn) finishNetcheck(rep *report, full, apply bool) {
	c.mu.Lock()
	for tx, sp := range c.nc.pending {
		if sp.rep == rep {
			delete(c.nc.pending, tx)
		}
	}
	c.nc.running = false
	c.nc.report = nil
	if !apply || c.closed || c.derpMap == nil {
		c.mu.Unlock()
		return
	}
	now := time.Now()
	if full {
		c.nc.lastFull = now
	}
	c.nc.last = rep
	c.nc.nextRun = now.Add(randDuration(c.tm.restunMin, c.tm.restunMax))
	oldHome := c.home
	c.home = c.pickHome(rep, now)
	home := c.home
	eps := c.determineEndpoints(rep)
	changed := !slices.Equal(eps, c.endpoints)
	c.endpoints = eps
	c.epTime = now
	c.mu.Unlock()

	if home != oldHome {
		c.log.Info("magicsock: home DERP", "region", home, "was", oldHome)
		if home != 0 {
			c.derp.SetHome(home)
		}
		c.reportHomeWhenConnected(home)
	}
	if changed && c.opts.OnEndpoints != nil {
		c.opts.OnEndpoints(slices.Clone(eps))
	}
}

// pickHome chooses the home region from rep (spec 5.5). Conn.mu is held.
func (c *Conn) pickHome(rep *report, now time.Time) int {
	dm := c.derpMap
	eligible := func(id int) bool { r := dm.Regions[id]; return r != nil && !r.NoMeasureNoHome }
	score := func(id int) time.Duration {
		l := rep.latency[id]
		if dm.HomeParams != nil {
			if s, ok := dm.HomeParams.RegionScore[id]; ok && s > 0 {
				l = time.Duration(float64(l) * s)
			}
		}
		return l
	}
	best := 0
	for _, id := range slices.Sorted(maps.Keys(rep.latency)) {
		if eligible(id) && (best == 0 || score(id) < score(best)) {
			best = id
		}
	}
	cur := c.home
	if cur != 0 && !eligible(cur) {
		cur = 0
	}
	if best == 0 {
		if cur != 0 {
			return cur // no STUN results: keep the home we have
		}
		return c.fallbackHome()
	}
	if cur == 0 || cur == best {
		return best
	}
	frame := c.nc.lastFrame(cur)
	if _, ok := rep.latency[cur]; !ok {
		if !frame.IsZero() && now.Sub(frame) < homeFrameKeepAlive && (frame.After(rep.start) || now.Sub(frame) < homeFrameRecent) {
			return cur
		}
		return best
	}
	old, nb := score(cur), score(best)
	if old-nb < homeKeepIfWithin || nb > old*2/3 {
		return cur
	}
	return best
}

// fallbackHome picks a region without measurements: a pseudo-random one,
// stable for this node. Conn.mu is held.
func (c *Conn) fallbackHome() int {
	var ids []int
	for id, r := range c.derpMap.Regions {
		if r == nil || r.NoMeasureNoHome {
			continue
		}
		for _, n := range r.Nodes {
			if n != nil && !n.STUNOnly {
				ids = append(ids, id)
				break
			}
		}
	}
	if len(ids) == 0 {
		return 0
	}
	slices.Sort(ids)
	h := fnv.New32a()
	h.Write(c.nodePub[:])
	return ids[int(h.Sum32()%uint32(len(ids)))]
}

// determineEndpoints lists the STUN-observed addresses and the local
// addresses with the socket's port. Conn.mu is held.
func (c *Conn) determineEndpoints(rep *report) []Endpoint {
	var out []Endpoint
	seen := map[netip.AddrPort]bool{}
	add := func(ap netip.AddrPort, t EndpointType) {
		if ap.IsValid() && !seen[ap] {
			seen[ap] = true
			out = append(out, Endpoint{ap, t})
		}
	}
	add(rep.global4, tailcfg.EndpointSTUN)
	add(rep.global6, tailcfg.EndpointSTUN)
	for _, ap := range c.localAddrs() {
		add(ap, tailcfg.EndpointLocal)
	}
	return out
}

// localAddrs returns the addresses of the sockets: the bound address, or
// every usable interface address when bound to all.
func (c *Conn) localAddrs() []netip.AddrPort {
	var out []netip.AddrPort
	var ifAddrs []netip.Addr
	loaded := false
	for _, pc := range []*net.UDPConn{c.pc4.Load(), c.pc6.Load()} {
		if pc == nil {
			continue
		}
		la := pc.LocalAddr().(*net.UDPAddr).AddrPort()
		bound, port := la.Addr().Unmap(), la.Port()
		if !bound.IsUnspecified() {
			out = append(out, netip.AddrPortFrom(bound, port))
			continue
		}
		if !loaded {
			ifAddrs, loaded = c.interfaceAddrs(), true
		}
		for _, ip := range ifAddrs {
			if ip.Is4() == bound.Is4() {
				out = append(out, netip.AddrPortFrom(ip, port))
			}
		}
	}
	return out
}

func (c *Conn) interfaceAddrs() []netip.Addr {
	var ips []netip.Addr
	if c.opts.InterfaceAddrs != nil {
		ips, _ = c.opts.InterfaceAddrs()
	} else {
		addrs, _ := net.InterfaceAddrs()
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil {
				ips = append(ips, p.Addr())
			}
		}
	}
	var out []netip.Addr
	for _, ip := range ips {
		ip = ip.Unmap()
		if !ip.IsValid() || ip.Zone() != "" || ip.IsLoopback() || ip.IsLinkLocalUnicast() ||
			ip.IsMulticast() || ip.IsUnspecified() || isTailscaleIP(ip) {
			continue
		}
		out = append(out, ip)
	}
	return out
}

var (
	cgnat = netip.MustParsePrefix("100.64.0.0/10")
	tsULA = netip.MustParsePrefix("fd7a:115c:a1e0::/48")
)

// isTailscaleIP reports whether ip is in a range tailnet addresses use;
// such interface addresses are not underlay endpoints.
func isTailscaleIP(ip netip.Addr) bool { return cgnat.Contains(ip) || tsULA.Contains(ip) }

// reportHomeWhenConnected tells OnHomeDERP of a new home region now if the
// connection to it is up, or else when it comes up (derpConnected). Peers
// learn the home region from control; telling control before we are there
// would have their first packets relayed to nobody.
func (c *Conn) reportHomeWhenConnected(home int) {
	cd, canTell := c.derp.(ConnectedDERP)
	c.mu.Lock()
	c.homeUnreported = home
	c.mu.Unlock()
	if home == 0 || !canTell || cd.Connected(home) {
		c.derpConnected(home)
	}
}

// derpConnected is called when the connection to a region comes up, and
// reports the home region if that is the one awaited.
func (c *Conn) derpConnected(region int) {
	c.mu.Lock()
	report := c.homeUnreported == region && c.home == region && !c.closed
	if report {
		c.homeUnreported = -1
	}
	c.mu.Unlock()
	if report && c.opts.OnHomeDERP != nil {
		c.opts.OnHomeDERP(region)
	}
}
