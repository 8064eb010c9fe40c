package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/microlink-go/microlink/interop/lab"
	"tailscale.com/ipn/ipnstate"
	"tailscale.com/tstest/integration/testcontrol"
	"tailscale.com/types/key"
)

const tsName = "soak-ts"

// soak is one run.
type soak struct {
	o     options
	r     *lab.Runner
	l     *lab.Lab
	relay *relay
	mlh   *host
	tsh   *host
	ts    *lab.Tailscaled
	node  *node
	mlIP  netip.Addr
	mlKey key.NodePublic
	start time.Time
	dir   string // logs

	udpMu sync.Mutex
	udp   *net.UDPConn
	seq   uint64

	rep      *report
	samplesW *json.Encoder
	wmu      sync.Mutex
}

func run(ctx context.Context, o options) (*report, error) {
	dir, err := os.MkdirTemp("", "soak-")
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(os.Stderr, "soak: logs in %s\n", dir)
	labLog, err := os.Create(filepath.Join(dir, "lab.log"))
	if err != nil {
		return nil, err
	}
	defer labLog.Close()
	var labMu sync.Mutex
	logf := func(format string, args ...any) {
		labMu.Lock()
		defer labMu.Unlock()
		fmt.Fprintf(labLog, time.Now().Format("15:04:05.000 ")+format+"\n", args...)
		if o.Verbose {
			fmt.Fprintf(os.Stderr, format+"\n", args...)
		}
	}
	s := &soak{o: o, r: lab.NewRunner("soak", logf), dir: dir, rep: &report{opts: o}}
	defer s.r.Close()
	if o.Samples != "" {
		f, err := os.Create(o.Samples)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		s.samplesW = json.NewEncoder(f)
	}
	if err := s.setup(logf); err != nil {
		return nil, err
	}
	defer s.node.stop()
	s.loop(ctx)
	return s.rep, nil
}

func (s *soak) status(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "soak %6.1fm: %s\n", time.Since(s.start).Minutes(), fmt.Sprintf(format, args...))
}

func (s *soak) record(kind string, v any) {
	if s.samplesW == nil {
		return
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.samplesW.Encode(map[string]any{"kind": kind, "v": v})
}

func (s *soak) setup(logf func(string, ...any)) error {
	s.start = time.Now()
	if err := setupInternet(); err != nil {
		return err
	}
	var err error
	pid := os.Getpid()
	if s.mlh, err = newHost(fmt.Sprintf("soak%d-ml", pid), 1); err != nil {
		return err
	}
	s.r.Cleanup(s.mlh.remove)
	if s.tsh, err = newHost(fmt.Sprintf("soak%d-ts", pid), 2); err != nil {
		return err
	}
	s.r.Cleanup(s.tsh.remove)
	s.r.Cleanup(func() { liftCut() })

	s.relay = &relay{key: key.NewNode(), addr: netip.AddrPortFrom(serverAddr, 0).String(), logf: func(f string, a ...any) { logf("derp: "+f, a...) }}
	if err := s.relay.start(); err != nil {
		return err
	}
	s.r.Cleanup(s.relay.stop)
	if err := s.r.Do(func() {
		s.l = lab.Start(s.r, lab.Options{
			ListenAddr: serverAddr,
			Logf:       logf,
			ConfigureControl: func(c *testcontrol.Server) {
				// The region's node is our restartable relay; STUN stays
				// the lab's.
				c.DERPMap = c.DERPMap.Clone()
				for _, r := range c.DERPMap.Regions {
					for _, n := range r.Nodes {
						n.DERPPort = s.relay.port()
					}
				}
			},
		})
		s.ts = s.l.StartTailscaled(s.r, lab.TSOptions{Hostname: tsName, TUN: true, Netns: s.tsh.NS})
		s.r.Cleanup(func() { // before the lab removes it
			b, _ := os.ReadFile(s.ts.LogFile)
			os.WriteFile(filepath.Join(s.dir, "tailscaled.log"), b, 0o644)
		})
	}); err != nil {
		return err
	}
	node, first, err := startNode(s.o.NodeBin, s.mlh.NS, s.l.ControlURL, s.l.AuthKey, s.r.TempDir(), filepath.Join(s.dir, "node.log"), s.o.NodeDebug)
	if err != nil {
		return err
	}
	s.node, s.mlIP = node, first.IPv4
	if err := s.mlKey.UnmarshalText([]byte(first.NodeKey)); err != nil {
		return err
	}
	if err := lab.Within(s.tsh.NS, func() (err error) {
		s.udp, err = net.ListenUDP("udp4", &net.UDPAddr{})
		return err
	}); err != nil {
		return err
	}
	s.r.Cleanup(func() { s.udp.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := s.ts.WaitStatus(ctx, func(st *ipnstate.Status) bool {
		p := lab.FindPeer(st, nodeName)
		return p != nil && p.Relay != ""
	}); err != nil {
		return fmt.Errorf("tailscaled never saw microlink with a home relay: %w", err)
	}
	if _, err := s.waitDirect(ctx, s.mlh.Addr); err != nil {
		return fmt.Errorf("no direct path at the start: %w", err)
	}
	s.status("ready: microlink %v (node key %s) and tailscaled %v, direct path up", s.mlIP, s.mlKey.ShortString(), s.ts.IPv4())
	s.record("start", s.start)
	return nil
}

// loop probes, samples and injects faults until the duration is over or
// ctx ends.
func (s *soak) loop(ctx context.Context) {
	end := s.start.Add(s.o.Duration)
	ctx, cancel := context.WithDeadline(ctx, end)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); s.probeLoop(ctx) }()
	go func() { defer wg.Done(); s.sampleLoop(ctx) }()
	all := map[string]func(context.Context) fault{
		"control": s.controlRestart, "derp": s.derpRestart, "cut": s.pathCut, "address": s.addressChange,
	}
	var faults []func(context.Context) fault
	for _, name := range strings.Split(s.o.Faults, ",") {
		if f, ok := all[strings.TrimSpace(name)]; ok {
			faults = append(faults, f)
		}
	}
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			wg.Wait()
			s.rep.end = time.Now()
			s.rep.start = s.start
			return
		case <-time.After(time.Until(s.start.Add(time.Duration(i+1) * s.o.FaultEvery))):
		}
		if time.Until(end) < s.o.FaultEvery/2 || len(faults) == 0 {
			continue // not enough time left to see the recovery
		}
		f := faults[i%len(faults)](ctx)
		f.At = f.Start.Sub(s.start)
		s.status("fault %d, %s: %s", i+1, f.Kind, f.summary())
		s.rep.addFault(f)
		s.record("fault", f)
	}
}

// probeResult is one probe: an OS ping and a UDP echo from tailscaled's
// host to microlink's tailnet address.
type probeResult struct {
	Start, End time.Time
	Ping, UDP  bool
}

func (p probeResult) ok() bool { return p.Ping && p.UDP }

// probe pings and echoes once, each waiting up to wait (whole seconds)
// for the answer.
func (s *soak) probe(ctx context.Context, wait time.Duration) probeResult {
	res := probeResult{Start: time.Now()}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		pctx, cancel := context.WithTimeout(ctx, wait+3*time.Second)
		defer cancel()
		secs := fmt.Sprint(max(1, int(wait/time.Second)))
		res.Ping = exec.CommandContext(pctx, "ip", "netns", "exec", s.tsh.NS, "ping", "-n", "-q", "-c", "1", "-W", secs, s.mlIP.String()).Run() == nil
	}()
	res.UDP = s.echo(wait)
	wg.Wait()
	res.End = time.Now()
	return res
}

// echo sends a numbered datagram to the node's echo port and waits for it
// to come back.
func (s *soak) echo(within time.Duration) bool {
	s.udpMu.Lock()
	defer s.udpMu.Unlock()
	s.seq++
	msg := binary.BigEndian.AppendUint64([]byte("soak"), s.seq)
	dst := netip.AddrPortFrom(s.mlIP, echoPort)
	if _, err := s.udp.WriteToUDPAddrPort(msg, dst); err != nil {
		return false
	}
	deadline := time.Now().Add(within)
	buf := make([]byte, 64)
	for {
		s.udp.SetReadDeadline(deadline)
		n, from, err := s.udp.ReadFromUDPAddrPort(buf)
		if err != nil {
			if s.o.NodeDebug {
				s.status("echo %d: no answer", s.seq)
			}
			return false
		}
		if from == dst && bytes.Equal(buf[:n], msg) {
			return true
		}
	}
}

func (s *soak) probeLoop(ctx context.Context) {
	t := time.NewTicker(s.o.ProbeEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p := s.probe(context.Background(), 5*time.Second)
		s.rep.addProbe(p)
		s.record("probe", p)
		if !p.ok() {
			s.status("probe failed: ping %v, UDP %v", p.Ping, p.UDP)
		}
	}
}

// sample is the node's resource use at one moment, and the probes since
// the previous sample.
type sample struct {
	At         time.Duration
	Goroutines int
	HeapInuse  uint64
	RSS        uint64
	FDs        int
	State      string
	ProbesOK   int
	Probes     int
}

func (s *soak) sampleLoop(ctx context.Context) {
	// Half a period off the faults, which come at whole periods.
	next := s.start.Add(s.o.SampleEvery / 2)
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(next)):
		}
		next = next.Add(s.o.SampleEvery)
		ns, err := s.node.sample()
		if err != nil {
			s.status("sampling the node: %v", err)
			continue
		}
		rss, fds, err := s.node.procStats()
		if err != nil {
			s.status("reading /proc of the node: %v", err)
			continue
		}
		ok, total := s.rep.probesSinceLastSample()
		sm := sample{At: time.Since(s.start), Goroutines: ns.Goroutines, HeapInuse: ns.HeapInuse, RSS: rss, FDs: fds,
			State: ns.State, ProbesOK: ok, Probes: total}
		s.rep.addSample(sm)
		s.record("sample", sm)
		s.status("goroutines %d, heap %.2f MiB, RSS %.2f MiB, FDs %d, %s, probes %d/%d",
			sm.Goroutines, mib(sm.HeapInuse), mib(sm.RSS), sm.FDs, sm.State, ok, total)
	}
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// fault is one injected fault and what was measured after it.
type fault struct {
	Kind  string
	Start time.Time
	At    time.Duration // since the soak started
	// Outage is how long from the fault until a probe (ping and UDP
	// echo) succeeded again; probes in that window do not count against
	// the availability goal.
	Outage time.Duration
	// Recovery is the fault's own measure (see what), or -1 if it did
	// not recover within the time allowed.
	Recovery time.Duration
	What     string
	// RegisterRequests is how many register requests the node sent
	// because of the fault (it should send none).
	RegisterRequests uint64
	Err              string `json:",omitempty"`
}

func (f fault) summary() string {
	rec := "not recovered"
	if f.Recovery >= 0 {
		rec = f.Recovery.Round(10 * time.Millisecond).String()
	}
	s := fmt.Sprintf("traffic back after %v; %s: %s", f.Outage.Round(10*time.Millisecond), f.What, rec)
	if f.RegisterRequests > 0 {
		s += fmt.Sprintf("; %d register requests", f.RegisterRequests)
	}
	if f.Err != "" {
		s += "; " + f.Err
	}
	return s
}

// untilOK probes from the fault's start until a probe succeeds, for at
// most limit: one probe after another, each waiting a second for its
// answers, so that the time is known to about a second.
func (s *soak) untilOK(ctx context.Context, start time.Time, limit time.Duration) time.Duration {
	for time.Since(start) < limit {
		if p := s.probe(ctx, time.Second); p.ok() {
			return p.End.Sub(start)
		}
		if ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	return -1
}

// waitFor polls cond every 100 ms for at most limit and returns how long
// it took since start, or -1.
func waitFor(ctx context.Context, start time.Time, limit time.Duration, cond func() bool) time.Duration {
	for time.Since(start) < limit && ctx.Err() == nil {
		if cond() {
			return time.Since(start)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return -1
}

func (s *soak) registers() uint64 {
	ns, err := s.node.sample()
	if err != nil {
		return 0
	}
	return ns.RegisterRequests
}

// directTo reports whether tailscaled's disco ping reaches microlink
// directly at addr.
func (s *soak) directTo(ctx context.Context, addr netip.Addr) bool {
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	res, err := s.ts.Ping(pctx, s.mlIP, "disco")
	if err != nil || res.Endpoint == "" {
		return false
	}
	ap, err := netip.ParseAddrPort(res.Endpoint)
	return err == nil && ap.Addr() == addr
}

func (s *soak) waitDirect(ctx context.Context, addr netip.Addr) (time.Duration, error) {
	start := time.Now()
	if d := waitFor(ctx, start, time.Minute, func() bool { return s.directTo(ctx, addr) }); d >= 0 {
		return d, nil
	}
	return -1, errors.New("no direct path within a minute")
}

// controlRestart drops every control connection; the node must resume
// its map stream without registering again.
func (s *soak) controlRestart(ctx context.Context) fault {
	f := fault{Kind: "control restart", What: "map stream back"}
	before, _ := s.node.sample()
	f.Start = time.Now()
	if err := s.r.Do(func() { s.l.RestartControl(s.r) }); err != nil {
		f.Err = err.Error()
	}
	f.Outage = s.untilOK(ctx, f.Start, 2*time.Minute)
	f.Recovery = waitFor(ctx, f.Start, 2*time.Minute, func() bool {
		ns, err := s.node.sample()
		return err == nil && ns.MapUpdates > before.MapUpdates && ns.State == "Connected"
	})
	f.RegisterRequests = s.registers() - before.RegisterRequests
	return f
}

// derpRestart stops the DERP server for 5 s and starts it again, empty;
// the node must connect again.
func (s *soak) derpRestart(ctx context.Context) fault {
	f := fault{Kind: "DERP restart", What: "DERP connection back (after the server's return)"}
	regs := s.registers()
	f.Start = time.Now()
	s.relay.stop()
	// Traffic on the direct path must not wait for the relay: the probes
	// start while it is down.
	outage := make(chan time.Duration, 1)
	go func() { outage <- s.untilOK(ctx, f.Start, 2*time.Minute) }()
	time.Sleep(5 * time.Second)
	if err := s.relay.start(); err != nil {
		f.Err = err.Error()
	}
	back := time.Now()
	f.Outage = <-outage
	f.Recovery = waitFor(ctx, back, 2*time.Minute, func() bool { return s.relay.connected(s.mlKey) })
	f.RegisterRequests = s.registers() - regs
	return f
}

// pathCut drops UDP between the hosts for a minute: traffic must move to
// DERP, and back to the direct path after the cut.
func (s *soak) pathCut(ctx context.Context) fault {
	f := fault{Kind: "path cut (60 s)", What: "direct path back after the cut"}
	regs := s.registers()
	f.Start = time.Now()
	if err := cutUDP(s.mlh, s.tsh); err != nil {
		f.Err = err.Error()
		return f
	}
	f.Outage = s.untilOK(ctx, f.Start, time.Minute)
	select {
	case <-ctx.Done():
	case <-time.After(time.Until(f.Start.Add(time.Minute))):
	}
	if err := liftCut(); err != nil {
		f.Err = err.Error()
	}
	lifted := time.Now()
	f.Recovery = waitFor(ctx, lifted, 2*time.Minute, func() bool { return s.directTo(ctx, s.mlh.Addr) })
	f.RegisterRequests = s.registers() - regs
	return f
}

// addressChange renumbers microlink's host without telling the node; it
// must notice, report its new endpoint and get a direct path again.
func (s *soak) addressChange(ctx context.Context) fault {
	f := fault{Kind: "address change", What: "new endpoint at control / direct path back"}
	regs := s.registers()
	last := byte(20)
	if s.mlh.Addr.As4()[3] == 20 {
		last = 2
	}
	f.Start = time.Now()
	if err := s.mlh.renumber(last); err != nil {
		f.Err = err.Error()
		return f
	}
	addr := s.mlh.Addr
	endpoint := waitFor(ctx, f.Start, 2*time.Minute, func() bool {
		n := s.l.Control.Node(s.mlKey)
		if n == nil {
			return false
		}
		for _, ep := range n.Endpoints {
			if ep.Addr() == addr {
				return true
			}
		}
		return false
	})
	f.Outage = s.untilOK(ctx, f.Start, 2*time.Minute)
	direct := waitFor(ctx, f.Start, 2*time.Minute, func() bool { return s.directTo(ctx, addr) })
	f.Recovery = max(endpoint, direct)
	if endpoint < 0 || direct < 0 {
		f.Recovery = -1
	}
	f.What = fmt.Sprintf("endpoint at control %v, direct path %v; both", endpoint.Round(10*time.Millisecond), direct.Round(10*time.Millisecond))
	f.RegisterRequests = s.registers() - regs
	return f
}
