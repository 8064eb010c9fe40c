package attacktest

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tailscale.com/tailcfg"
	"tailscale.com/tstest/integration/testcontrol"

	"github.com/microlink-go/microlink/internal/disco"
	"github.com/microlink-go/microlink/internal/key"
	"github.com/microlink-go/microlink/internal/wireguard"
	"github.com/microlink-go/microlink/interop/lab"
)

// The bounds every attack is held to. The victim's own figures are
// measured before each attack, after a garbage collection; the peaks are
// sampled every 100 ms during it.
const (
	attackTime = 4 * time.Second // each attack, and the pings during it

	// The real peer's pings: at most maxLoss of them unanswered (or
	// maxLossLineRate under a flood at line rate, where the kernel drops
	// datagrams of every sender alike once the victim's socket buffer is
	// full), the median round trip at most maxMedianRTT; none answered
	// twice.
	maxLoss         = 0.10
	maxLossLineRate = 0.25
	maxMedianRTT    = 100 * time.Millisecond

	maxExtraGoroutines = 10       // over the victim's count before the attack
	maxHeapInuse       = 32 << 20 // the victim's heap, garbage included
	maxExtraFDs        = 4        // over the victim's count before the attack
	maxLogGrowth       = 64 << 10 // bytes the victim logs during an attack

	// farNet is routed to the loopback interface, so that the far
	// endpoints the attacker names (198.18.128.0/17) reach canary sockets.
	farNet = "198.18.128.0/17"
)

// suite is the lab, the victim, the real peer and the attacker.
type suite struct {
	lab     *lab.Lab
	real    *lab.Tailscaled
	v       *victimProc
	h       *hostile
	bad     *badDERP
	results []result
}

// result is what one attack did and what the victim did meanwhile.
type result struct {
	name            string
	attack          string // what the attacker achieved
	pings, answered int
	dups            int
	median, max     time.Duration
	goroutines      [2]int // before, peak
	heapPeak        uint64
	heapAfter       uint64 // after the attack and a garbage collection
	fds             [2]int // before, peak
	logGrowth       int64
}

func TestUnderAttack(t *testing.T) {
	if err := lab.TUNAvailable(); err != nil {
		t.Skipf("needs the real peer in TUN mode: %v", err)
	}
	bin := buildVictim(t, t.TempDir())
	run(t, "ip", "route", "add", "local", farNet, "dev", "lo")

	nodeKey := key.NewPrivate()
	var hp atomic.Pointer[hostile]
	bad := startBadDERP(t, nodeKey.NodePublic(), func(_ key.NodePublic, pkt []byte) {
		if h := hp.Load(); h != nil {
			h.receive(pkt, netip.AddrPort{}, true)
		}
	})
	l := lab.Start(t, lab.Options{ConfigureControl: func(c *testcontrol.Server) {
		c.DERPMap.Regions[badRegionID] = &tailcfg.DERPRegion{
			RegionID: badRegionID, RegionCode: "bad", RegionName: "Misbehaving", NoMeasureNoHome: true,
			Nodes: []*tailcfg.DERPNode{{
				Name: fmt.Sprintf("%da", badRegionID), RegionID: badRegionID, HostName: "127.0.0.1",
				IPv4: "127.0.0.1", IPv6: "none", DERPPort: bad.Port(), STUNPort: -1, InsecureForTests: true,
			}},
		}
	}})
	real := l.StartTailscaled(t, lab.TSOptions{Hostname: "real-peer", TUN: true})
	v := startVictim(t, bin, l)
	h := startHostile(t, l, nodeKey)
	hp.Store(h)
	h.waitVictim("victim")
	s := &suite{lab: l, real: real, v: v, h: h, bad: bad}

	// The real peer reaches the victim before anything starts.
	lab.WaitFor(t, 30*time.Second, "the real peer's first ping answered", func() bool {
		out, _ := lab.Command(context.Background(), "ping", "-n", "-c", "1", "-W", "1", v.addr.String()).CombinedOutput()
		return strings.Contains(string(out), " 0% packet loss")
	})

	s.phase(t, "none (baseline)", maxLoss, func(ctx context.Context, t *testing.T) string {
		<-ctx.Done()
		return "-"
	})
	s.phase(t, "call-me-maybe: placeholder, loopback, 10,000 endpoints, every 10 ms", maxLoss, s.callMeMaybe)
	s.phase(t, "handshake initiations, one source", maxLoss, func(ctx context.Context, t *testing.T) string {
		return s.handshakeFlood(ctx, t, 1)
	})
	s.phase(t, "handshake initiations, 256 sources", maxLoss, func(ctx context.Context, t *testing.T) string {
		return s.handshakeFlood(ctx, t, 256)
	})
	s.phase(t, "random datagrams at line rate", maxLossLineRate, s.randomDatagrams)
	s.phase(t, "replayed and reordered transport messages", maxLoss, s.replays)
	s.phase(t, "disco from unknown keys, bad box lengths", maxLoss, s.discoGarbage)
	s.phase(t, "DERP frames of every type with wrong lengths", maxLoss, s.derpFrames)
	s.phase(t, "SYN flood on a ListenTCP listener while the real peer connects", maxLoss, s.synFlood)
	s.report(t)
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// phase runs one attack for attackTime while the real peer pings the
// victim, samples the victim, and checks the bounds, allowing the real
// peer to lose the fraction loss of its pings.
func (s *suite) phase(t *testing.T, name string, loss float64, attack func(context.Context, *testing.T) string) {
	t.Run(name, func(t *testing.T) {
		before, err := s.v.stats(true)
		if err != nil {
			t.Fatal(err)
		}
		r := result{name: name, goroutines: [2]int{before.Goroutines, before.Goroutines}, fds: [2]int{before.FDs, before.FDs}}
		logBefore := s.v.logSize()

		ctx, cancel := context.WithTimeout(context.Background(), attackTime)
		defer cancel()
		pings := make(chan pingResult, 1)
		go func() { pings <- ping(s.v.addr, int(attackTime/(100*time.Millisecond))) }()
		sampled := make(chan struct{})
		stopSampling := make(chan struct{})
		go func() {
			defer close(sampled)
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stopSampling:
					return
				case <-tick.C:
				}
				st, err := s.v.stats(false)
				if err != nil {
					t.Errorf("victim: %v", err)
					return
				}
				r.goroutines[1] = max(r.goroutines[1], st.Goroutines)
				r.fds[1] = max(r.fds[1], st.FDs)
				r.heapPeak = max(r.heapPeak, st.HeapInuse)
			}
		}()
		r.attack = attack(ctx, t)
		<-ctx.Done()
		p := <-pings
		close(stopSampling)
		<-sampled
		after, err := s.v.stats(true)
		if err != nil {
			t.Fatal(err)
		}
		r.heapAfter = after.HeapInuse
		r.logGrowth = s.v.logSize() - logBefore
		r.pings, r.answered, r.dups = p.sent, len(p.rtts), p.dups
		if len(p.rtts) > 0 {
			slices.Sort(p.rtts)
			r.median, r.max = p.rtts[len(p.rtts)/2], p.rtts[len(p.rtts)-1]
		}
		s.results = append(s.results, r)
		t.Logf("%s: %s; pings %d/%d answered, median %v, max %v; goroutines %d->%d, heap peak %.1f MiB (%.1f after GC), fds %d->%d, log +%d B",
			name, r.attack, r.answered, r.pings, r.median, r.max, r.goroutines[0], r.goroutines[1],
			float64(r.heapPeak)/(1<<20), float64(r.heapAfter)/(1<<20), r.fds[0], r.fds[1], r.logGrowth)

		if p.err != nil {
			t.Errorf("ping: %v\n%s", p.err, p.out)
		}
		if lost := r.pings - r.answered; float64(lost) > loss*float64(r.pings) {
			t.Errorf("the real peer lost %d of %d pings, more than %.0f%%", lost, r.pings, loss*100)
		}
		if r.median > maxMedianRTT {
			t.Errorf("median round trip %v, over %v", r.median, maxMedianRTT)
		}
		if r.dups != 0 {
			t.Errorf("%d pings answered twice", r.dups)
		}
		if r.goroutines[1] > r.goroutines[0]+maxExtraGoroutines {
			t.Errorf("victim goroutines went from %d to %d", r.goroutines[0], r.goroutines[1])
		}
		if r.heapPeak > maxHeapInuse {
			t.Errorf("victim heap reached %d bytes", r.heapPeak)
		}
		if r.fds[1] > r.fds[0]+maxExtraFDs {
			t.Errorf("victim open files went from %d to %d", r.fds[0], r.fds[1])
		}
		if r.logGrowth > maxLogGrowth {
			t.Errorf("victim logged %d bytes", r.logGrowth)
		}
		ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
		// One line of attack.jsonl, from which scripts/bench.sh writes the
		// "Under attack" section of docs/BENCHMARKS.md.
		lab.WriteBench(t, "attack.jsonl", map[string]any{
			"attack": r.name, "attacker": r.attack, "seconds": attackTime.Seconds(),
			"pings": r.pings, "answered": r.answered, "duplicates": r.dups, "allowedLoss": loss,
			"medianMs": ms(r.median), "maxMs": ms(r.max), "maxMedianMs": ms(maxMedianRTT),
			"goroutinesBefore": r.goroutines[0], "goroutinesPeak": r.goroutines[1], "maxExtraGoroutines": maxExtraGoroutines,
			"heapPeak": r.heapPeak, "heapAfterGC": r.heapAfter, "maxHeap": maxHeapInuse,
			"fdsBefore": r.fds[0], "fdsPeak": r.fds[1], "maxExtraFDs": maxExtraFDs,
			"logBytes": r.logGrowth, "passed": !t.Failed(),
		})
	})
}

// pingResult is what the kernel's ping reported.
type pingResult struct {
	sent int
	rtts []time.Duration // one per answered sequence number
	dups int
	out  []byte
	err  error
}

var pingLine = regexp.MustCompile(`icmp_seq=(\d+) ttl=\d+ time=([\d.]+) ms( \(DUP!\))?`)

// ping pings ip n times, 100 ms apart, from the test's network namespace,
// through the real peer's TUN device.
func ping(ip netip.Addr, n int) pingResult {
	r := pingResult{sent: n}
	r.out, r.err = lab.Command(context.Background(), "ping", "-n", "-i", "0.1", "-W", "1", "-c", strconv.Itoa(n), ip.String()).CombinedOutput()
	if r.err != nil && strings.Contains(string(r.out), "packets transmitted") {
		r.err = nil // ping exits 1 when some went unanswered
	}
	seen := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(string(r.out)))
	for sc.Scan() {
		m := pingLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		if m[3] != "" || seen[m[1]] {
			r.dups++
			continue
		}
		seen[m[1]] = true
		ms, _ := strconv.ParseFloat(m[2], 64)
		r.rtts = append(r.rtts, time.Duration(ms*float64(time.Millisecond)))
	}
	return r
}

// report logs the results as a table.
func (s *suite) report(t *testing.T) {
	var b strings.Builder
	fmt.Fprintf(&b, "| attack (%v each) | attacker | real peer's pings answered | median / max RTT | victim goroutines | victim heap peak (after GC) | victim fds |\n", attackTime)
	b.WriteString("|---|---|---|---|---|---|---|\n")
	for _, r := range s.results {
		fmt.Fprintf(&b, "| %s | %s | %d/%d | %.2f / %.1f ms | %d → %d | %.1f MiB (%.1f) | %d → %d |\n",
			r.name, r.attack, r.answered, r.pings,
			float64(r.median)/float64(time.Millisecond), float64(r.max)/float64(time.Millisecond),
			r.goroutines[0], r.goroutines[1], float64(r.heapPeak)/(1<<20), float64(r.heapAfter)/(1<<20), r.fds[0], r.fds[1])
	}
	t.Logf("under attack:\n%s", b.String())
}

// pace calls send(i) for i = 0, 1, ... at rate calls a second until ctx
// is done, in bursts every 2 ms, and returns the number of calls.
func pace(ctx context.Context, rate int, send func(i int)) int {
	const tick = 2 * time.Millisecond
	start := time.Now()
	i := 0
	for ctx.Err() == nil {
		due := int(time.Since(start).Seconds()*float64(rate)) + rate*int(tick)/int(time.Second)
		for ; i < due && ctx.Err() == nil; i++ {
			send(i)
		}
		time.Sleep(tick)
	}
	return i
}

func perSecond(n int, d time.Duration) string {
	return fmt.Sprintf("%d/s", int(float64(n)/d.Seconds()))
}

// callMeMaybe sends the victim, over DERP every 10 ms, call-me-maybe
// messages naming the DERP placeholder for many regions (a canary's port
// among them), loopback canaries, addresses no peer may name, and 10,000
// far endpoints in windows of 3,000. Pings the victim relays for the
// placeholder get forged pongs from the placeholder canary. Nothing may
// reach the placeholder or loopback canaries, and the far endpoints get
// only disco pings: at most 32 for each call-me-maybe the victim's rate
// limit lets through.
func (s *suite) callMeMaybe(ctx context.Context, t *testing.T) string {
	h := s.h
	placeholder := newCanary(t, h, "127.3.3.40")
	loop := newCanary(t, h, "127.0.0.1")
	far := newCanary(t, h, "0.0.0.0") // 198.18.128.0/17 is routed to loopback
	forge := func(p *disco.Ping) {
		pong := h.disco.Seal(nil, h.victim.disco, &disco.Pong{TxID: p.TxID, Src: placeholder.addr})
		placeholder.pc.WriteToUDPAddrPort(pong, h.victim.udp)
	}
	h.onDERPPing.Store(&forge)
	defer h.onDERPPing.Store(nil)

	fixed := []netip.AddrPort{placeholder.addr, loop.addr,
		netip.AddrPortFrom(netip.MustParseAddr("::1"), loop.addr.Port()),
		netip.AddrPortFrom(netip.MustParseAddr("0.0.0.0"), far.addr.Port()),
		netip.AddrPortFrom(netip.MustParseAddr("224.0.0.1"), far.addr.Port()),
		netip.AddrPortFrom(netip.MustParseAddr("169.254.0.1"), far.addr.Port()),
	}
	for r := 1; r <= 50; r++ {
		fixed = append(fixed, netip.AddrPortFrom(netip.MustParseAddr("127.3.3.40"), uint16(r)))
	}
	base := netip.MustParseAddr("198.18.128.0").As4()
	farEP := func(i int) netip.AddrPort {
		a := base
		v := binary.BigEndian.Uint32(a[:]) + uint32(i)
		binary.BigEndian.PutUint32(a[:], v)
		return netip.AddrPortFrom(netip.AddrFrom4(a), far.addr.Port())
	}
	sent := 0
	start := time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for ctx.Err() == nil {
		eps := slices.Clone(fixed)
		for j := range 3000 {
			eps = append(eps, farEP((sent*3000+j)%10000))
		}
		if err := h.sendDiscoDERP(&disco.CallMeMaybe{MyNumber: eps}); err != nil {
			t.Errorf("sending call-me-maybe: %v", err)
			break
		}
		sent++
		select {
		case <-tick.C:
		case <-ctx.Done():
		}
	}
	elapsed := time.Since(start)
	time.Sleep(500 * time.Millisecond) // the last pings arrive
	if n := placeholder.disco.Load() + placeholder.other.Load(); n != 0 {
		t.Errorf("%d packets reached the placeholder canary %v", n, placeholder.addr)
	}
	if n := loop.disco.Load() + loop.other.Load(); n != 0 {
		t.Errorf("%d packets reached the loopback canary %v", n, loop.addr)
	}
	if n := far.other.Load(); n != 0 {
		t.Errorf("%d packets other than disco reached the far endpoints", n)
	}
	// Each accepted call-me-maybe pings at most 32 candidates: a burst of
	// 4, then one a second.
	most := int64(32 * (4 + int(elapsed/time.Second) + 1))
	if n := far.disco.Load(); n > most {
		t.Errorf("%d disco packets to the far endpoints, want at most %d", n, most)
	}
	return fmt.Sprintf("%d messages (%s) of %d endpoints; the far endpoints got %d disco pings, the loopback and placeholder ones %d packets",
		sent, perSecond(sent, elapsed), len(fixed)+3000, far.disco.Load(),
		placeholder.disco.Load()+placeholder.other.Load()+loop.disco.Load()+loop.other.Load())
}

// handshakeFlood sends the victim handshake initiations with a valid
// mac1 (and random content) from sources UDP sockets on as many loopback
// addresses, at 25,000 a second in all, and counts the cookie replies.
func (s *suite) handshakeFlood(ctx context.Context, t *testing.T, sources int) string {
	k := s.h.mac1Key()
	var socks []*net.UDPConn
	var cookies atomic.Int64
	var wg sync.WaitGroup
	for i := range sources {
		ip := netip.AddrFrom4([4]byte{127, 1, byte(i >> 8), byte(i + 1)})
		pc, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		socks = append(socks, pc)
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 256)
			for {
				n, _, err := pc.ReadFromUDPAddrPort(buf)
				if err != nil {
					return
				}
				if n == wireguard.CookieReplySize && buf[0] == wireguard.TypeCookieReply {
					cookies.Add(1)
				}
			}
		}()
	}
	const batch = 64
	msgs := make([][]byte, batch)
	for i := range msgs {
		msgs[i] = make([]byte, wireguard.InitiationSize)
		randomInitiation(msgs[i], &k)
	}
	start := time.Now()
	n := pace(ctx, 25000, func(i int) {
		socks[i%len(socks)].WriteToUDPAddrPort(msgs[i%batch], s.h.victim.udp)
	})
	elapsed := time.Since(start)
	time.Sleep(200 * time.Millisecond)
	for _, pc := range socks {
		pc.Close()
	}
	wg.Wait()
	rate := float64(n) / elapsed.Seconds()
	if rate < 20000 {
		t.Errorf("the attacker managed only %.0f initiations a second", rate)
	}
	return fmt.Sprintf("%s from %d source address(es); %d cookie replies back", perSecond(n, elapsed), sources, cookies.Load())
}

// randomDatagrams sends the victim's UDP socket random datagrams as fast
// as one goroutine can: random bytes, and bytes dressed up as WireGuard
// handshakes, transport messages, disco and STUN.
func (s *suite) randomDatagrams(ctx context.Context, t *testing.T) string {
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	var pool [][]byte
	for i := range 1024 {
		b := make([]byte, 1+mrand.IntN(1400))
		rand.Read(b)
		switch i % 8 {
		case 0, 1: // a handshake initiation with a bad mac1
			b = append(b[:0], make([]byte, wireguard.InitiationSize)...)
			rand.Read(b)
			binary.LittleEndian.PutUint32(b, wireguard.TypeInitiation)
		case 2, 3: // a transport message for a random session
			if len(b) < 32 {
				b = append(b, make([]byte, 32)...)
			}
			binary.LittleEndian.PutUint32(b, wireguard.TypeTransport)
		case 4: // disco from an unknown key
			if len(b) < disco.HeaderLen {
				b = append(b, make([]byte, disco.HeaderLen)...)
			}
			copy(b, disco.Magic)
		case 5: // a STUN binding that is none
			if len(b) < 20 {
				b = append(b, make([]byte, 20)...)
			}
			b[0], b[1], b[4], b[5], b[6], b[7] = 0, 1, 0x21, 0x12, 0xa4, 0x42
		}
		pool = append(pool, b)
	}
	start := time.Now()
	n, bytes := 0, 0
	for ctx.Err() == nil {
		for range 256 {
			b := pool[n%len(pool)]
			pc.WriteToUDPAddrPort(b, s.h.victim.udp)
			n++
			bytes += len(b)
		}
	}
	elapsed := time.Since(start)
	return fmt.Sprintf("%s datagrams, %.0f Mbit/s", perSecond(n, elapsed), float64(bytes)*8/elapsed.Seconds()/1e6)
}

// replays opens a WireGuard session from the hostile node to the victim,
// then seals 2,500 ICMP echo requests and delivers the newest first and
// then every transport message three times, shuffled, about 3,000 a
// second: each request must be answered exactly once, even those that
// arrive some 2,500 counters behind the newest.
func (s *suite) replays(ctx context.Context, t *testing.T) string {
	h := s.h
	lab.WaitFor(t, 3*time.Second, "a session with the victim", func() bool {
		h.wg.SendPacket(h.echoRequest(0))
		time.Sleep(50 * time.Millisecond)
		return h.replies()[0] > 0
	})
	const n = 2500
	h.mu.Lock()
	h.capture, h.captured = true, nil
	h.mu.Unlock()
	for seq := range uint16(n) {
		if err := h.wg.SendPacket(h.echoRequest(1000 + seq)); err != nil {
			t.Fatal(err)
		}
	}
	h.mu.Lock()
	msgs := h.captured
	h.capture, h.captured = false, nil
	h.mu.Unlock()
	all := [][]byte{msgs[len(msgs)-1]}
	for range 3 {
		all = append(all, msgs...)
	}
	mrand.Shuffle(len(all)-1, func(i, j int) { all[i+1], all[j+1] = all[j+1], all[i+1] })
	for i, m := range all {
		if ctx.Err() != nil {
			t.Fatal("attack time over before every message was sent")
		}
		h.pc.WriteToUDPAddrPort(m, h.victim.udp)
		if i%30 == 29 {
			time.Sleep(10 * time.Millisecond)
		}
	}
	<-ctx.Done()
	replies := h.replies()
	answered, twice := 0, 0
	for seq := range uint16(n) {
		switch c := replies[1000+seq]; {
		case c == 1:
			answered++
		case c > 1:
			answered++
			twice++
		}
	}
	if twice != 0 {
		t.Errorf("%d echo requests answered more than once", twice)
	}
	if answered < n*98/100 {
		t.Errorf("only %d of %d echo requests answered", answered, n)
	}
	return fmt.Sprintf("%d echo requests, the newest first, then each 3 times shuffled; %d answered once, %d more than once", len(msgs), answered, twice)
}

// discoGarbage sends the victim disco packets from keys it does not know,
// and packets from the hostile node's own disco key whose boxes have bad
// lengths or hold messages of bad lengths, over UDP at 20,000 a second
// and over DERP at 1,000 a second. None may be answered.
func (s *suite) discoGarbage(ctx context.Context, t *testing.T) string {
	h := s.h
	shared := disco.SharedKey(key.NewPrivate(), h.victim.disco) // a stranger's
	var pool [][]byte
	for i := range 512 {
		var b []byte
		switch i % 4 {
		case 0: // from an unknown key
			stranger := key.NewPrivate().DiscoPublic()
			b = disco.Seal(nil, shared, stranger, (&disco.Ping{}).AppendMarshal(nil))
		case 1: // our key, a box shorter than its tag, or of random bytes
			pub := h.disco.Public()
			b = append(append([]byte(disco.Magic), pub[:]...), make([]byte, disco.NonceLen+i%40)...)
			rand.Read(b[disco.MagicLen+32:])
		case 2: // our key, messages of bad lengths
			plain := [][]byte{{1, 0, 1, 2, 3}, {2, 0, 9}, {3, 0, 1}, append([]byte{3, 0}, make([]byte, 17)...), {0xff, 0}, {1}}[i/4%6]
			b = disco.Seal(nil, h.disco.Shared(h.victim.disco), h.disco.Public(), plain)
		case 3: // our key, a box of random bytes up to 1400
			pub := h.disco.Public()
			b = append(append([]byte(disco.Magic), pub[:]...), make([]byte, disco.NonceLen+mrand.IntN(1400))...)
			rand.Read(b[disco.MagicLen+32:])
		}
		pool = append(pool, b)
	}
	pongsBefore := h.pongs.Load()
	start := time.Now()
	var derpSent atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		derpSent.Store(int64(pace(ctx, 1000, func(i int) { h.relay.Send(h.victim.key, pool[(i*7)%len(pool)]) })))
	}()
	n := pace(ctx, 20000, func(i int) { h.pc.WriteToUDPAddrPort(pool[i%len(pool)], h.victim.udp) })
	<-done
	elapsed := time.Since(start)
	time.Sleep(200 * time.Millisecond)
	if got := h.pongs.Load() - pongsBefore; got != 0 {
		t.Errorf("the victim answered %d of them", got)
	}
	return fmt.Sprintf("%s over UDP, %s over DERP", perSecond(n, elapsed), perSecond(int(derpSent.Load()), elapsed))
}

// derpFrames makes the misbehaving relay of the hostile node's home
// region, to which the victim is connected to reach that node, send every
// frame type with wrong lengths, megabyte health messages and packets
// from unknown keys, and end each round with a frame over the size limit.
func (s *suite) derpFrames(ctx context.Context, t *testing.T) string {
	h := s.h
	lab.WaitFor(t, 3*time.Second, "the victim connected to the misbehaving relay", func() bool {
		if s.bad.accepted.Load() > 0 {
			return true
		}
		h.wg.SendPacket(h.echoRequest(1)) // the victim answers through the hostile node's home region
		time.Sleep(50 * time.Millisecond)
		return false
	})
	conns := s.bad.accepted.Load()
	s.bad.misbehave.Store(true)
	<-ctx.Done()
	s.bad.misbehave.Store(false)
	return fmt.Sprintf("%d malformed frames on %d connection(s)", s.bad.framesOut.Load(), s.bad.accepted.Load()-conns+1)
}
