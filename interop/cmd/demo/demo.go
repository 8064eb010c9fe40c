package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/microlink-go/microlink"
	"github.com/microlink-go/microlink/interop/lab"
	"tailscale.com/ipn/ipnstate"
	"tailscale.com/tstest/integration/testcontrol"
)

// options configure a demo run.
type options struct {
	// DERPOnly keeps the real peer off direct UDP, so traffic with it is
	// relayed by the lab's DERP server.
	DERPOnly bool
	// Userspace runs the real peer with userspace networking even when a
	// TUN device is possible.
	Userspace bool
	// Verbose shows the logs of the lab and microlink's logs from info
	// level up; otherwise only microlink's warnings are shown, and the last
	// lab logs only after a failure.
	Verbose bool
	// Log receives those logs. Nil means os.Stderr.
	Log io.Writer

	// authKey, if set, replaces the lab's auth key for the microlink node,
	// so that tests can make a step fail.
	authKey string
}

// Hostnames of the nodes in the demo tailnet.
const (
	peerName   = "real-peer"        // the real tailscaled
	nodeName   = "microlink-demo"   // the microlink node of this process
	daemonName = "microlink-router" // the "microlink up" process
	tsnetName  = "tsnet-peer"       // in-process peer for UDP without a TUN
)

// Bounds on the waits of the steps.
const (
	runTimeout   = 4 * time.Minute
	startTimeout = 30 * time.Second
	waitTimeout  = 15 * time.Second
	pingTimeout  = 3 * time.Second
	pingAttempts = 5
	udpTimeout   = 10 * time.Second
	stopTimeout  = 10 * time.Second
)

// demo is the state of one run.
type demo struct {
	opts   options
	out    io.Writer
	r      *lab.Runner
	recent *logRing // lab logs kept for a failure report when not verbose

	lab     *lab.Lab
	router  *routerNetns // the daemon's own network; nil without root
	peer    *lab.Tailscaled
	tun     bool // peer has a TUN device: the demo process reaches 100.x
	node    *microlink.Node
	started time.Time       // when Node.Start returned
	far     *farEnd         // once a step needs it
	cli     string          // the microlink command, once built
	upFlags map[string]bool // the flags of its "up"
	planned map[string]bool // by feature (an "up" flag): whether its step runs
	daemon  *daemon         // "microlink up", once started
	// The daemon's tailnet IPv4 address, and where its proxies listen.
	daemonIP             netip.Addr
	socksAddr, httpProxy string

	part    string // of the step shown last
	results []result
	failed  []string
}

// run performs the demo, writing its account to stdout, and returns an
// error naming the steps that failed, if any. Everything it starts is
// stopped before it returns.
func run(ctx context.Context, opts options, stdout io.Writer) error {
	if opts.Log == nil {
		opts.Log = os.Stderr
	}
	t0 := time.Now()
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, runTimeout)
	defer cancel()
	d := &demo{opts: opts, out: stdout, recent: newLogRing(60), planned: map[string]bool{}}
	labLogf := d.recent.Logf
	if opts.Verbose {
		labLogf = func(format string, args ...any) {
			fmt.Fprintf(opts.Log, "lab: "+strings.TrimRight(format, "\n")+"\n", args...)
		}
	}
	d.r = lab.NewRunner("demo", labLogf)
	defer func() {
		// Normally done by the last step already; this covers a panic.
		d.daemon.kill()
		if d.node != nil {
			d.node.Close()
		}
		d.r.Close()
	}()
	// Some lab servers log through the standard logger.
	prevOut, prevFlags := log.Writer(), log.Flags()
	log.SetOutput(logfWriter(labLogf))
	log.SetFlags(0)
	defer func() {
		log.SetOutput(prevOut)
		log.SetFlags(prevFlags)
	}()

	fmt.Fprintf(d.out, "microlink demo: a private tailnet of real Tailscale code, offline on this machine\n")
	// The microlink command is built first: the steps of the demo depend
	// on the features it has. Its account waits until the skipped steps
	// are announced.
	build := step{part: "The microlink command", name: "Build the microlink command", fatal: true, run: d.buildCLI}
	var buildOut bytes.Buffer
	d.out = &buildOut
	notRun := d.runStep(ctx, 1, build, "", "")
	d.out = stdout
	steps := append([]step{build}, d.steps()...)
	skips := d.announceSkips(steps)
	for i, s := range steps {
		if s.feature != "" {
			d.planned[s.feature] = skips[i] == ""
		}
	}
	d.out.Write(buildOut.Bytes())
	for i := 1; i < len(steps); i++ {
		notRun = d.runStep(ctx, i+1, steps[i], skips[i], notRun)
	}
	res := result{num: len(steps) + 1, name: "Shut down", status: statusPassed}
	d.header(res.num, "", res.name)
	start := time.Now()
	if err := d.shutdown(); err != nil {
		d.fail(res.name, err)
		res.status = statusFailed
	}
	res.took = time.Since(start)
	d.results = append(d.results, res)

	if parent.Err() != nil {
		d.failed = append([]string{fmt.Sprintf("interrupted: %v", context.Cause(parent))}, d.failed...)
	}
	d.summary(time.Since(t0))
	if len(d.failed) == 0 {
		return nil
	}
	if !opts.Verbose {
		fmt.Fprintf(opts.Log, "--- last lab logs (run with --verbose for all) ---\n")
		d.recent.WriteTo(opts.Log)
	}
	return errors.New(strings.Join(d.failed, "; "))
}

// steps returns the demo's steps after the build of the microlink
// command, in order.
//
// A step that other work builds on is fatal: if it fails, the steps after
// it are not run. A step lists its needs of this machine and of the run's
// options; a step with an unmet need is skipped, and the run says so before
// it starts. That is how a step for a feature that needs root (a TUN
// device, a network namespace) keeps the demo passing where it cannot run.
//
// A step that shows a feature of the daemon names the flag of "microlink
// up" that turns it on; it is left out when the microlink command has no
// such flag, and startDaemon adds the flag when the step runs.
// d.router.Command runs a program on the router, in the daemon's own
// network (d.router is nil without root, when the daemon shares this
// process's network); d.farEnd serves on a tailnet address other than
// microlink's. OS commands a step runs go in its needs and in
// scripts/demo.sh's install list. "ip netns exec" shares the host's
// /etc/resolv.conf unless /etc/netns/NAME holds one: the MagicDNS step
// gives the router one (giveResolvConf) before the daemon starts, so that
// --accept-dns rewrites the router's, never the host's.
func (d *demo) steps() []step {
	const (
		tailnet = "A tailnet of real Tailscale code"
		library = "The library: a microlink node inside this Go program"
		daemon  = "The daemon: microlink up, as a router runs it"
	)
	all := []step{
		{part: tailnet, name: "Start the lab (control, DERP and STUN servers of tailscale.com " + lab.TailscaleVersion + ")", fatal: true, run: d.startLab},
		{part: tailnet, name: "Start a real tailscaled named " + peerName, fatal: true, run: d.startPeer},

		{part: library, name: "Start the microlink node " + nodeName + " in this process", fatal: true, run: d.startNode},
		{part: library, name: "What microlink sees: Node.Peers()", run: d.nodePeers},
		{part: library, name: "What the real peer sees: tailscale status", run: d.peerStatus},
		{part: library, name: "The real peer pings microlink: tailscale ping", run: d.peerPings},
		{part: library, name: "The OS pings microlink through the real peer's TUN device", run: d.osPing,
			needs: []need{d.needTUN, needCommand("ping", "iputils-ping")}},
		{part: library, name: "microlink pings the real peer: Node.Ping", run: d.nodePings},
		{part: library, name: "UDP datagrams both ways", run: d.udp},
		{part: library, name: "microlink's view afterwards: paths and counters", run: d.nodeSummary},

		{part: daemon, name: "Start the daemon " + daemonName + ": microlink up", fatal: true, run: d.startDaemon},
		{part: daemon, name: "What the daemon sees: microlink status", run: d.daemonStatus},
		{part: daemon, name: "Pings to and from the daemon: microlink ping, tailscale ping", run: d.daemonPings},
		{part: daemon, name: "Programs on the router reach the tailnet through the daemon's TUN device", run: d.tunPrograms,
			feature: "tun", needs: []need{needRouter, needCommand("ping", "iputils-ping"), needCommand("curl", "curl")}},
		{part: daemon, name: "A program on the router finds the real peer by name: MagicDNS through the TUN device (--accept-dns)", run: d.magicDNS,
			feature: "accept-dns", needs: []need{needRouter, needCommand("getent", "libc-bin")}},
		{part: daemon, name: "curl through the daemon's SOCKS5 and HTTP proxies, by MagicDNS name", run: d.proxies,
			feature: "socks5-server", needs: []need{needCommand("curl", "curl")}},
	}
	var steps []step
	for _, s := range all {
		if s.feature == "" || d.upFlags[s.feature] {
			steps = append(steps, s)
		}
	}
	return steps
}

func (d *demo) header(num int, part, name string) {
	if part != d.part && part != "" {
		fmt.Fprintf(d.out, "\n== %s ==\n", part)
	}
	d.part = part
	fmt.Fprintf(d.out, "\n[%d] %s\n", num, name)
}

// linef prints one indented line of a step's account.
func (d *demo) linef(format string, args ...any) {
	fmt.Fprintf(d.out, "    "+format+"\n", args...)
}

// block prints text indented under the step.
func (d *demo) block(text string) {
	text = strings.TrimRight(text, "\n")
	if text == "" {
		return
	}
	for _, line := range strings.Split(text, "\n") {
		fmt.Fprintf(d.out, "      %s\n", line)
	}
}

func (d *demo) fail(name string, err error) {
	// errors.Join puts one error a line.
	msg := strings.ReplaceAll(err.Error(), "\n", "; ")
	d.linef("FAILED: %s", msg)
	d.failed = append(d.failed, name+": "+msg)
}

func (d *demo) startLab(ctx context.Context) error {
	// A real control server tells each node which peers are online;
	// testcontrol leaves that out unless AllOnline is set, and the peer
	// list would then call every peer offline.
	opts := lab.Options{ConfigureControl: func(s *testcontrol.Server) { s.AllOnline = true }}
	err := d.r.Do(func() {
		if lab.InNetns() {
			// The daemon gets a network of its own, as on a router; the
			// lab's servers listen where it reaches them.
			d.router = newRouterNetns(d.r)
			opts.ListenAddr = d.router.Near.Addr()
		}
		d.lab = lab.Start(d.r, opts)
	})
	if err != nil {
		return err
	}
	l := d.lab
	if d.router != nil {
		d.linef("network    a private network namespace for the lab, the real peer and this process;")
		d.linef("           the daemon's own, %s, is linked to it by veth: %v <-> %v", d.router.Name, d.router.Near.Addr(), d.router.Far.Addr())
	} else {
		d.linef("network    this host's loopback (no private namespace: not root, or no ip command)")
	}
	d.linef("control    %s  (auth key %s)", l.ControlURL, l.AuthKey)
	d.linef("DERP       %s  (region %d)", l.DERPURL, lab.DERPRegionID)
	d.linef("STUN       %s", l.STUNAddr)
	return nil
}

func (d *demo) startPeer(ctx context.Context) error {
	noTUN := d.needTUN()
	d.tun = noTUN == ""
	if d.tun {
		d.linef("mode       TUN device: this process and OS commands reach 100.x addresses through it")
	} else {
		d.linef("mode       userspace networking: %s", noTUN)
	}
	if d.opts.DERPOnly {
		d.linef("paths      DERP only: TS_DEBUG_NEVER_DIRECT_UDP=1 (--derp-only)")
	}
	tailscaled, _, err := lab.Binaries()
	if err != nil {
		return err
	}
	d.linef("binary     %s", tailscaled)
	t0 := time.Now()
	err = d.r.Do(func() {
		d.peer = d.lab.StartTailscaled(d.r, lab.TSOptions{
			Hostname:    peerName,
			TUN:         d.tun,
			NeverDirect: d.opts.DERPOnly,
		})
	})
	if err != nil {
		return err
	}
	d.linef("running    in %v, device %s", since(t0), d.peer.TUNName)
	d.linef("addresses  %s", joinAddrs(d.peer.IPv4(), d.peer.IPv6()))
	return nil
}

func (d *demo) startNode(ctx context.Context) error {
	var dir string
	if err := d.r.Do(func() { dir = d.r.TempDir() }); err != nil {
		return err
	}
	level := slog.LevelWarn
	if d.opts.Verbose {
		level = slog.LevelInfo
	}
	logger := slog.New(slog.NewTextHandler(d.opts.Log, &slog.HandlerOptions{Level: level})).With("node", nodeName)
	authKey := d.lab.AuthKey
	if d.opts.authKey != "" {
		authKey = d.opts.authKey
	}
	n, err := microlink.New(microlink.Config{
		AuthKey:    authKey,
		ControlURL: d.lab.ControlURL,
		Hostname:   nodeName,
		StateDir:   dir,
		Port:       -1,
		Logger:     logger,
	})
	if err != nil {
		return fmt.Errorf("microlink.New: %w", err)
	}
	d.node = n
	d.linef("config     ControlURL %s, StateDir %s, Port -1 (any free port)", d.lab.ControlURL, dir)
	sctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	t0 := time.Now()
	if err := n.Start(sctx); err != nil {
		st := n.Status()
		return fmt.Errorf("Node.Start after %v: %w (state %v, last control error: %v)", since(t0), err, st.State, st.Err)
	}
	d.started = time.Now()
	st := n.Status()
	d.linef("connected  in %v, state %v", since(t0), st.State)
	d.linef("addresses  %s", joinAddrs(n.IPv4(), n.IPv6()))
	d.linef("name       %s", st.FQDN)
	d.linef("node key   %s", st.NodeKey)
	if st.HomeDERP != 0 {
		d.linef("home DERP  region %d", st.HomeDERP)
	} else {
		d.linef("home DERP  not chosen yet")
	}
	if !n.IPv4().IsValid() {
		return errors.New("connected, but the node has no tailnet IPv4 address")
	}
	return nil
}

func (d *demo) nodePeers(ctx context.Context) error {
	if _, err := d.waitNodePeer(ctx, peerName); err != nil {
		printPeers(d.out, d.node.Peers())
		return err
	}
	printPeers(d.out, d.node.Peers())
	addrs, err := d.node.Resolve(peerName)
	if err != nil {
		return fmt.Errorf("Resolve(%q): %w", peerName, err)
	}
	d.linef("Resolve(%q) = %v", peerName, addrs)
	if !containsAddr(addrs, d.peer.IPv4()) {
		return fmt.Errorf("Resolve(%q) = %v, but the real peer has %v", peerName, addrs, d.peer.IPv4())
	}
	return nil
}

// waitNodePeer waits until the microlink node lists a peer named name.
func (d *demo) waitNodePeer(ctx context.Context, name string) (microlink.Peer, error) {
	ctx, cancel := context.WithTimeout(ctx, waitTimeout)
	defer cancel()
	for {
		if p, ok := d.node.Peer(name); ok {
			return p, nil
		}
		select {
		case <-ctx.Done():
			return microlink.Peer{}, fmt.Errorf("microlink does not list peer %q: %w", name, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (d *demo) peerStatus(ctx context.Context) error {
	wctx, cancel := context.WithTimeout(ctx, waitTimeout)
	defer cancel()
	ps, werr := d.peer.WaitPeer(wctx, nodeName)
	if werr == nil && ps.Relay == "" && len(d.controlEndpoints()) == 0 {
		// Until microlink has told control its home DERP region or an
		// endpoint, the real peer has no way to reach it.
		d.linef("the real peer lists %s but knows no path to it yet; waiting", nodeName)
		var path *ipnstate.PeerStatus
		_, werr = d.peer.WaitStatus(wctx, func(st *ipnstate.Status) bool {
			path = lab.FindPeer(st, nodeName)
			return path != nil && (path.Relay != "" || len(d.controlEndpoints()) > 0)
		})
		if werr != nil {
			werr = fmt.Errorf("no home DERP region nor endpoint of %s reached the real peer: %w", nodeName, werr)
		} else {
			ps = path
			d.linef("a path became known %v after Node.Start returned", since(d.started))
		}
	}
	out, err := d.peer.CLI(ctx, "status")
	d.linef("$ tailscale status")
	d.block(string(out))
	if err != nil {
		return fmt.Errorf("tailscale status: %w", err)
	}
	if werr != nil {
		return fmt.Errorf("the real peer: %w", werr)
	}
	relay := ps.Relay
	if relay == "" {
		relay = "(none yet)"
	}
	d.linef("%s as the real peer knows it: home DERP %s; endpoints at control %v", nodeName, relay, d.controlEndpoints())
	if !containsAddr(ps.TailscaleIPs, d.node.IPv4()) {
		return fmt.Errorf("the real peer sees %s at %v, but microlink has %v", nodeName, ps.TailscaleIPs, d.node.IPv4())
	}
	return nil
}

func (d *demo) peerPings(ctx context.Context) error {
	ip := d.node.IPv4().String()
	var errs []error
	for _, kind := range []struct {
		name  string
		flags []string
	}{
		{"disco", nil},
		{"TSMP", []string{"--tsmp"}},
		{"ICMP", []string{"--icmp"}},
	} {
		if err := d.tailscalePing(ctx, ip, kind.flags...); err != nil {
			errs = append(errs, fmt.Errorf("%s ping of microlink: %w", kind.name, err))
		}
	}
	return errors.Join(errs...)
}

// tailscalePing runs "tailscale ping [flags] -c 3 IP" on the real peer and
// shows it.
func (d *demo) tailscalePing(ctx context.Context, ip string, flags ...string) error {
	args := append([]string{"ping"}, flags...)
	args = append(args, "--until-direct=false", "-c", "3", "--timeout=3s", ip)
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	out, err := d.peer.CLI(cctx, args...)
	cancel()
	d.linef("$ tailscale %s", strings.Join(args, " "))
	d.block(string(out))
	if err != nil {
		return fmt.Errorf("%v: %s", err, strings.TrimSpace(lastLine(string(out))))
	}
	return nil
}

func (d *demo) osPing(ctx context.Context) error {
	ip := d.node.IPv4().String()
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	args := []string{"-c", "3", "-i", "0.2", "-W", "3", ip}
	out, err := lab.Command(cctx, "ping", args...).CombinedOutput()
	d.linef("$ ping %s", strings.Join(args, " "))
	d.block(string(out))
	if err != nil {
		return fmt.Errorf("ping %s: %v", ip, err)
	}
	return nil
}

func (d *demo) nodePings(ctx context.Context) error {
	var errs []error
	for _, typ := range []microlink.PingType{microlink.PingDisco, microlink.PingTSMP, microlink.PingICMP} {
		res, tries, err := d.pingPeer(ctx, peerName, typ)
		if err != nil {
			d.linef("%-6s %s: no answer after %d tries: %v", typ, peerName, tries, err)
			errs = append(errs, fmt.Errorf("%v ping of %s: %w", typ, peerName, err))
			continue
		}
		d.linef("%-6s pong from %s (%v) via %s in %v%s", typ, res.Peer, res.PeerIP, via(res.Endpoint, res.DERPRegion), roundDur(res.Latency), triesNote(tries))
	}
	return errors.Join(errs...)
}

// pingPeer pings until an answer arrives: the first pings may race with
// path discovery and the WireGuard handshake.
func (d *demo) pingPeer(ctx context.Context, target string, typ microlink.PingType) (microlink.PingResult, int, error) {
	var lastErr error
	for try := 1; try <= pingAttempts; try++ {
		pctx, cancel := context.WithTimeout(ctx, pingTimeout)
		res, err := d.node.Ping(pctx, target, typ)
		cancel()
		if err == nil {
			return res, try, nil
		}
		lastErr = err
		if ctx.Err() != nil {
			return res, try, lastErr
		}
		time.Sleep(100 * time.Millisecond)
	}
	return microlink.PingResult{}, pingAttempts, lastErr
}

func (d *demo) udp(ctx context.Context) error {
	f, err := d.farEnd(ctx)
	if err != nil {
		return err
	}
	far, err := f.listenPacket()
	if err != nil {
		return err
	}
	defer far.Close()
	farName, farAddr := f.name, f.addr
	farPort := uint16(far.LocalAddr().(*net.UDPAddr).Port)
	d.linef("far end    %s", f.label)
	d.linef("           %v", netip.AddrPortFrom(farAddr, farPort))

	var errs []error
	if err := d.udpToNode(ctx, far, farName, farAddr); err != nil {
		errs = append(errs, fmt.Errorf("%s -> microlink: %w", farName, err))
	}
	if err := d.udpFromNode(ctx, far, farName, farAddr, farPort); err != nil {
		errs = append(errs, fmt.Errorf("microlink -> %s: %w", farName, err))
	}
	return errors.Join(errs...)
}

// udpToNode sends datagrams from far to a socket of the node until one
// arrives.
func (d *demo) udpToNode(ctx context.Context, far net.PacketConn, farName string, farAddr netip.Addr) error {
	c, err := d.node.ListenUDP(0)
	if err != nil {
		return fmt.Errorf("Node.ListenUDP: %w", err)
	}
	defer c.Close()
	dst := netip.AddrPortFrom(d.node.IPv4(), c.Port())
	msg := []byte("hello microlink, from " + farName)
	buf := make([]byte, 1500)
	deadline := time.Now().Add(udpTimeout)
	var lastErr error
	for sent := 1; time.Now().Before(deadline) && ctx.Err() == nil; sent++ {
		if _, err := far.WriteTo(msg, net.UDPAddrFromAddrPort(dst)); err != nil {
			lastErr = err
		}
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			if lastErr == nil || !isTimeout(err) {
				lastErr = err
			}
			continue
		}
		src := from.(*net.UDPAddr).AddrPort()
		if string(buf[:n]) != string(msg) || src.Addr().Unmap() != farAddr {
			return fmt.Errorf("got %q from %v, want %q from %v", buf[:n], src, msg, farAddr)
		}
		d.linef("%s -> microlink %v: microlink got %q from %v%s", farName, dst, buf[:n], src, sentNote(sent))
		return nil
	}
	return fmt.Errorf("nothing arrived at %v within %v (last error: %v)", dst, udpTimeout, lastErr)
}

// udpFromNode sends datagrams from the node to far, addressed by name, until
// one arrives.
func (d *demo) udpFromNode(ctx context.Context, far net.PacketConn, farName string, farAddr netip.Addr, farPort uint16) error {
	target := fmt.Sprintf("%s:%d", farName, farPort)
	c, err := d.node.DialUDP(ctx, target)
	if err != nil {
		return fmt.Errorf("Node.DialUDP(%q): %w", target, err)
	}
	defer c.Close()
	msg := []byte("hello " + farName + ", from microlink")
	buf := make([]byte, 1500)
	deadline := time.Now().Add(udpTimeout)
	var lastErr error
	for sent := 1; time.Now().Before(deadline) && ctx.Err() == nil; sent++ {
		if _, err := c.Write(msg); err != nil {
			lastErr = err
		}
		far.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		n, from, err := far.ReadFrom(buf)
		if err != nil {
			if lastErr == nil || !isTimeout(err) {
				lastErr = err
			}
			continue
		}
		src := from.(*net.UDPAddr).AddrPort()
		if string(buf[:n]) != string(msg) || src.Addr().Unmap() != d.node.IPv4() {
			return fmt.Errorf("got %q from %v, want %q from %v", buf[:n], src, msg, d.node.IPv4())
		}
		d.linef("microlink -> %s (DialUDP %q): got %q from %v%s", farName, target, buf[:n], src, sentNote(sent))
		return nil
	}
	return fmt.Errorf("nothing arrived at %v within %v (last error: %v)", netip.AddrPortFrom(farAddr, farPort), udpTimeout, lastErr)
}

func (d *demo) nodeSummary(ctx context.Context) error {
	printPeers(d.out, d.node.Peers())
	st := d.node.Stats()
	d.linef("Stats()    packets in/out %d/%d, bytes in/out %d/%d, handshakes %d, dropped %d, peers %d",
		st.PacketsIn, st.PacketsOut, st.BytesIn, st.BytesOut, st.Handshakes, st.Dropped, st.Peers)
	d.linef("           WireGuard messages direct in/out %d/%d, relayed in/out %d/%d; netmap messages %d",
		st.DirectPacketsIn, st.DirectPacketsOut, st.DERPPacketsIn, st.DERPPacketsOut, st.MapUpdates)
	// And the other side's account of the same link.
	ps, err := d.peer.Status(ctx)
	if err != nil {
		return fmt.Errorf("status of the real peer: %w", err)
	}
	p := lab.FindPeer(ps, nodeName)
	if p == nil {
		return fmt.Errorf("the real peer no longer lists %s", nodeName)
	}
	path := "-"
	switch {
	case p.CurAddr != "":
		path = "direct " + p.CurAddr
	case p.Relay != "":
		path = "DERP " + p.Relay
	}
	d.linef("real peer  sees %s: path %s, home DERP %q, rx/tx bytes %d/%d", nodeName, path, p.Relay, p.RxBytes, p.TxBytes)
	d.linef("control    has %s's endpoints %v", nodeName, d.controlEndpoints())
	return nil
}

// controlEndpoints returns the UDP endpoints the control server holds for
// the microlink node: what it reported, and what peers are told.
func (d *demo) controlEndpoints() []netip.AddrPort {
	for _, n := range d.lab.Control.AllNodes() {
		if n.Hostinfo.Valid() && n.Hostinfo.Hostname() == nodeName {
			return n.Endpoints
		}
	}
	return nil
}

// shutdown stops the daemon, closes the node, then everything the lab
// started, the real peer included.
func (d *demo) shutdown() error {
	var errs []error
	if d.daemon != nil {
		if err := d.stopDaemon(); err != nil {
			errs = append(errs, err)
		} else if d.planned["accept-dns"] {
			if err := d.checkResolvConfRestored(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if d.node != nil {
		t0 := time.Now()
		if err := d.node.Close(); err != nil {
			errs = append(errs, fmt.Errorf("Node.Close: %w", err))
		}
		d.linef("microlink node closed in %v", since(t0))
	}
	if len(d.failed) > 0 {
		d.r.Fail() // the tailscaled log tail goes to the lab log
	}
	t0 := time.Now()
	if err := d.r.Close(); err != nil {
		errs = append(errs, err)
	}
	d.linef("real peer and lab stopped in %v", since(t0))
	return errors.Join(errs...)
}
