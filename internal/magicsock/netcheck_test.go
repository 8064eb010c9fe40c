package magicsock

import (
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microlink-go/microlink/internal/stun"
	"github.com/microlink-go/microlink/internal/tailcfg"
)

// stunServer answers Tailscale binding requests on loopback after delay.
type stunServer struct {
	pc       *net.UDPConn
	addr     netip.AddrPort
	requests atomic.Int32
}

func newSTUNServer(t *testing.T, network, ip string, delay time.Duration) *stunServer {
	pc, err := net.ListenUDP(network, &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Fatal(err)
	}
	s := &stunServer{pc: pc, addr: pc.LocalAddr().(*net.UDPAddr).AddrPort()}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 1500)
		for {
			n, src, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			tx, err := stun.ParseBindingRequest(buf[:n])
			if err != nil {
				continue
			}
			s.requests.Add(1)
			time.Sleep(delay)
			pc.WriteToUDPAddrPort(stun.Response(nil, tx, src), src)
		}
	}()
	t.Cleanup(func() { pc.Close(); wg.Wait() })
	return s
}

func stunRegion(id int, servers ...*stunServer) *tailcfg.DERPRegion {
	r := &tailcfg.DERPRegion{RegionID: id, RegionCode: "r" + strconv.Itoa(id)}
	for i, s := range servers {
		n := &tailcfg.DERPNode{Name: strconv.Itoa(id) + string(rune('a'+i)), RegionID: id, HostName: "derp.invalid", STUNPort: int(s.addr.Port())}
		if s.addr.Addr().Is4() {
			n.IPv4, n.IPv6 = s.addr.Addr().String(), "none"
		} else {
			n.IPv4, n.IPv6 = "none", s.addr.Addr().String()
		}
		r.Nodes = append(r.Nodes, n)
	}
	return r
}

// recorder collects a Conn's notifications.
type recorder struct {
	mu    sync.Mutex
	homes []int
	eps   [][]Endpoint
}

func (r *recorder) opts(o Options) Options {
	o.OnHomeDERP = func(h int) { r.mu.Lock(); r.homes = append(r.homes, h); r.mu.Unlock() }
	o.OnEndpoints = func(e []Endpoint) { r.mu.Lock(); r.eps = append(r.eps, e); r.mu.Unlock() }
	return o
}

func (r *recorder) get() ([]int, [][]Endpoint) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.homes), slices.Clone(r.eps)
}

func TestNetcheck(t *testing.T) {
	slow := newSTUNServer(t, "udp4", "127.0.0.1", 40*time.Millisecond)
	fast := newSTUNServer(t, "udp4", "127.0.0.1", 0)
	unmeasured := newSTUNServer(t, "udp4", "127.0.0.1", 0)
	disabled := newSTUNServer(t, "udp4", "127.0.0.1", 0)
	dm := &tailcfg.DERPMap{Regions: map[int]*tailcfg.DERPRegion{
		1: stunRegion(1, slow),
		2: stunRegion(2, fast),
		3: stunRegion(3, unmeasured),
		4: stunRegion(4, disabled),
	}}
	dm.Regions[3].NoMeasureNoHome = true
	dm.Regions[4].Nodes[0].STUNPort = -1

	var rec recorder
	d := &fakeDERP{r: newFakeRelay(t)}
	a := newNode(t, nil, rec.opts(Options{DERP: d}))
	a.SetDERPMap(dm)
	waitFor(t, 3*time.Second, "home and endpoints", func() bool {
		h, e := rec.get()
		return len(h) > 0 && len(e) > 0
	})
	homes, eps := rec.get()
	if homes[0] != 2 || a.HomeDERP() != 2 || d.home.Load() != 2 {
		t.Fatalf("home %v (DERP told %d), want region 2", homes, d.home.Load())
	}
	want := []Endpoint{{a.udpTo, tailcfg.EndpointSTUN}}
	if !slices.Equal(eps[0], want) {
		t.Fatalf("endpoints %v, want %v", eps[0], want)
	}
	lat := a.RegionLatency()
	if _, ok := lat[1]; !ok || lat[2] >= lat[1] || len(lat) != 2 {
		t.Fatalf("latencies %v", lat)
	}
	if unmeasured.requests.Load() != 0 || disabled.requests.Load() != 0 {
		t.Fatalf("probed NoMeasureNoHome (%d) or STUNPort -1 (%d)", unmeasured.requests.Load(), disabled.requests.Load())
	}
	// Idle: no periodic STUN.
	n := fast.requests.Load()
	time.Sleep(2 * fastTiming.restunMax)
	if got := fast.requests.Load(); got != n {
		t.Fatalf("%d STUN requests while idle", got-n)
	}
	// Periodic re-STUN while active keeps measuring, without repeating
	// unchanged notifications.
	a.mu.Lock()
	a.lastActive = time.Now()
	a.mu.Unlock()
	waitFor(t, 3*time.Second, "a re-STUN", func() bool { return fast.requests.Load() > n })
	time.Sleep(50 * time.Millisecond)
	if homes, eps := rec.get(); len(homes) != 1 || len(eps) != 1 {
		t.Fatalf("repeated notifications: homes %v, endpoints %v", homes, eps)
	}
}

func TestNetcheckRegionScore(t *testing.T) {
	slow := newSTUNServer(t, "udp4", "127.0.0.1", 30*time.Millisecond)
	fast := newSTUNServer(t, "udp4", "127.0.0.1", 0)
	dm := &tailcfg.DERPMap{
		Regions: map[int]*tailcfg.DERPRegion{1: stunRegion(1, slow), 2: stunRegion(2, fast)},
		// A loopback round trip takes at least a microsecond: scored a
		// million times, the fast region is slower than the slow one's 30 ms.
		HomeParams: &tailcfg.DERPHomeParams{RegionScore: map[int]float64{2: 1e6}},
	}
	a := newNode(t, nil, Options{DERP: &fakeDERP{r: newFakeRelay(t)}})
	a.SetDERPMap(dm)
	waitFor(t, 3*time.Second, "a home region", func() bool { return a.HomeDERP() != 0 })
	if h := a.HomeDERP(); h != 1 {
		t.Fatalf("home %d, want 1 (region 2 scored down)", h)
	}
}

func TestNetcheckIPv6(t *testing.T) {
	s := newSTUNServer(t, "udp6", "::1", 0)
	var rec recorder
	a := newNode(t, nil, rec.opts(Options{DERP: &fakeDERP{r: newFakeRelay(t)}, BindIPv6: netip.MustParseAddr("::1")}))
	a.SetDERPMap(&tailcfg.DERPMap{Regions: map[int]*tailcfg.DERPRegion{7: stunRegion(7, s)}})
	waitFor(t, 3*time.Second, "endpoints", func() bool { _, e := rec.get(); return len(e) > 0 })
	_, eps := rec.get()
	v6 := netip.AddrPortFrom(netip.MustParseAddr("::1"), a.LocalPort())
	if !slices.Contains(eps[0], Endpoint{v6, tailcfg.EndpointSTUN}) || !slices.Contains(eps[0], Endpoint{a.udpTo, tailcfg.EndpointLocal}) {
		t.Fatalf("endpoints %v", eps[0])
	}
	if a.HomeDERP() != 7 {
		t.Fatalf("home %d", a.HomeDERP())
	}
}

func TestNoSTUNFallbackHome(t *testing.T) {
	dm := &tailcfg.DERPMap{Regions: map[int]*tailcfg.DERPRegion{}}
	for id := 1; id <= 5; id++ {
		dm.Regions[id] = &tailcfg.DERPRegion{RegionID: id, Nodes: []*tailcfg.DERPNode{{Name: "n", RegionID: id, HostName: "derp.invalid", IPv4: "none", IPv6: "none", STUNPort: -1}}}
	}
	dm.Regions[5].NoMeasureNoHome = true
	a := newNode(t, nil, Options{DERP: &fakeDERP{r: newFakeRelay(t)}})
	a.SetDERPMap(dm)
	waitFor(t, 3*time.Second, "a home region", func() bool { return a.HomeDERP() != 0 })
	h := a.HomeDERP()
	if h < 1 || h > 4 {
		t.Fatalf("home %d", h)
	}
	// Stable: a later netcheck without results keeps it.
	a.mu.Lock()
	again := a.pickHome(&report{latency: map[int]time.Duration{}}, time.Now())
	a.home = 0
	fresh := a.pickHome(&report{latency: map[int]time.Duration{}}, time.Now())
	a.mu.Unlock()
	if again != h || fresh != h {
		t.Fatalf("fallback home %d, then %d and %d", h, again, fresh)
	}
}

func TestPickHomeHysteresis(t *testing.T) {
	a := newNode(t, nil, Options{DERP: &fakeDERP{r: newFakeRelay(t)}})
	ms := time.Millisecond
	a.mu.Lock()
	defer a.mu.Unlock()
	a.derpMap = &tailcfg.DERPMap{Regions: map[int]*tailcfg.DERPRegion{1: {RegionID: 1}, 2: {RegionID: 2}, 3: {RegionID: 3, NoMeasureNoHome: true}}}
	now := time.Now()
	for _, tc := range []struct {
		name string
		cur  int
		lat  map[int]time.Duration
		want int
	}{
		{"first pick", 0, map[int]time.Duration{1: 50 * ms, 2: 20 * ms}, 2},
		{"within 10ms", 1, map[int]time.Duration{1: 25 * ms, 2: 16 * ms}, 1},
		{"best > 2/3 old", 1, map[int]time.Duration{1: 90 * ms, 2: 70 * ms}, 1},
		{"much better", 1, map[int]time.Duration{1: 90 * ms, 2: 30 * ms}, 2},
		{"never NoMeasureNoHome", 0, map[int]time.Duration{3: 1 * ms, 1: 50 * ms}, 1},
		{"old unreachable", 1, map[int]time.Duration{2: 80 * ms}, 2},
		{"no results", 1, map[int]time.Duration{}, 1},
	} {
		a.home = tc.cur
		if got := a.pickHome(&report{start: now, latency: tc.lat}, now); got != tc.want {
			t.Errorf("%s: home %d, want %d", tc.name, got, tc.want)
		}
	}
	// An old home without STUN results but with recent DERP traffic stays.
	a.nc.noteDERPFrame(1)
	a.home = 1
	if got := a.pickHome(&report{start: now.Add(-time.Second), latency: map[int]time.Duration{2: 80 * ms}}, time.Now()); got != 1 {
		t.Errorf("home with recent DERP frames: %d, want 1", got)
	}
}

func TestInterfaceAddrFilter(t *testing.T) {
	ips := []netip.Addr{}
	for _, s := range []string{"192.168.1.10", "127.0.0.1", "169.254.1.1", "fe80::1", "100.100.1.1", "fd7a:115c:a1e0::1", "2001:db8::5", "::ffff:10.0.0.1", "224.0.0.1"} {
		ips = append(ips, netip.MustParseAddr(s))
	}
	ips = append(ips, netip.MustParseAddr("fe80::2%eth0"))
	a := newNode(t, nil, Options{DERP: &fakeDERP{r: newFakeRelay(t)}, InterfaceAddrs: func() ([]netip.Addr, error) { return ips, nil }})
	got := a.interfaceAddrs()
	want := []netip.Addr{netip.MustParseAddr("192.168.1.10"), netip.MustParseAddr("2001:db8::5"), netip.MustParseAddr("10.0.0.1")}
	if !slices.Equal(got, want) {
		t.Fatalf("addrs %v, want %v", got, want)
	}
}

func TestRebind(t *testing.T) {
	s := newSTUNServer(t, "udp4", "127.0.0.1", 0)
	a, b, _ := pair(t)
	a.SetDERPMap(&tailcfg.DERPMap{Regions: map[int]*tailcfg.DERPRegion{1: stunRegion(1, s)}})
	waitFor(t, 3*time.Second, "first STUN", func() bool { return len(a.Endpoints()) > 0 })
	waitDirect(t, a, b)
	port := a.LocalPort()
	n := s.requests.Load()
	if err := a.Rebind(); err != nil {
		t.Fatal(err)
	}
	if a.LocalPort() != port {
		t.Fatalf("port %d after Rebind, was %d", a.LocalPort(), port)
	}
	if n := a.derp.(*fakeDERP).reconnects.Load(); n != 1 {
		t.Fatalf("%d DERP reconnects after Rebind, want 1", n)
	}
	waitFor(t, 3*time.Second, "STUN after Rebind", func() bool { return s.requests.Load() > n })
	waitDirect(t, b, a)
	a.Send(b.key.NodePublic(), []byte(wgMsg))
	waitFor(t, 2*time.Second, "a message over the new socket", func() bool {
		select {
		case m := <-b.wg:
			return m.src == a.udpTo
		default:
			return false
		}
	})
}

func TestSTUNAddrs(t *testing.T) {
	for _, tc := range []struct {
		node   tailcfg.DERPNode
		v4, v6 string
	}{
		{tailcfg.DERPNode{IPv4: "192.0.2.1", IPv6: "2001:db8::1"}, "192.0.2.1:3478", "[2001:db8::1]:3478"},
		{tailcfg.DERPNode{IPv4: "192.0.2.1", IPv6: "none", STUNPort: 9}, "192.0.2.1:9", ""},
		{tailcfg.DERPNode{IPv4: "2001:db8::1", IPv6: "192.0.2.1"}, "", ""},
		{tailcfg.DERPNode{IPv4: "none", IPv6: "none", STUNTestIP: "127.0.0.1", STUNPort: 7}, "127.0.0.1:7", ""},
		{tailcfg.DERPNode{IPv4: "none", IPv6: "none", STUNTestIP: "::1"}, "", "[::1]:3478"},
		{tailcfg.DERPNode{HostName: "localhost", IPv4: "", IPv6: "none"}, "127.0.0.1:3478", ""},
	} {
		v4, v6 := stunAddrs(&tc.node)
		str := func(aps []netip.AddrPort) string {
			if len(aps) == 0 {
				return ""
			}
			return aps[0].String()
		}
		if str(v4) != tc.v4 || str(v6) != tc.v6 {
			t.Errorf("%+v: %v %v, want %q %q", tc.node, v4, v6, tc.v4, tc.v6)
		}
	}
}

// TestPlanOrder: the probes of a plan come in order of their delay, and
// probes of equal delay keep the order of regions (ascending) and of
// address families (IPv4 first).
func TestPlanOrder(t *testing.T) {
	c := &Conn{tm: timing{stunRetry: 100 * time.Millisecond}}
	dm := &tailcfg.DERPMap{Regions: map[int]*tailcfg.DERPRegion{}}
	for id := 1; id <= 9; id++ {
		dm.Regions[id] = &tailcfg.DERPRegion{RegionID: id, Nodes: []*tailcfg.DERPNode{
			{Name: "a", RegionID: id, IPv4: "127.0.0." + strconv.Itoa(id), IPv6: "::1", STUNPort: 3478},
			{Name: "b", RegionID: id, IPv4: "127.0.1." + strconv.Itoa(id), IPv6: "none", STUNPort: 3478},
		}}
	}
	last := &report{latency: map[int]time.Duration{2: 30 * time.Millisecond, 5: 10 * time.Millisecond, 7: 20 * time.Millisecond}}
	for _, full := range []bool{true, false} {
		ps := c.plan(dm, last, 3, full)
		if len(ps) == 0 {
			t.Fatalf("full %v: no probes", full)
		}
		for i := 1; i < len(ps); i++ {
			a, b := ps[i-1], ps[i]
			if a.delay > b.delay {
				t.Fatalf("full %v: probe %d (delay %v) after one of delay %v", full, i, b.delay, a.delay)
			}
			if a.delay == b.delay && (a.key.region > b.key.region || a.key.region == b.key.region && a.key.v6 && !b.key.v6) {
				t.Fatalf("full %v: probes of delay %v out of order: %+v before %+v", full, a.delay, a.key, b.key)
			}
		}
	}
}
