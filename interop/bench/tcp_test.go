package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/microlink-go/microlink/interop/lab"
	"github.com/microlink-go/microlink/interop/linkemu"
	"github.com/microlink-go/microlink/interop/tcpxfer"
	"golang.org/x/sys/unix"
	"tailscale.com/ipn/ipnstate"
)

// TestTCPImpaired measures TCP on the emulated internet paths (linkemu):
// a real tailscaled in TUN mode, the kernel's TCP, is the far peer behind
// the emulator, and the node under test, next to the lab's servers, is in
// turn the kernel (a second tailscaled in TUN mode), gVisor (tsnet, in a
// tcpnode process) and microlink (a tcpnode process without tsnet). Each
// transfer goes one way, the far peer pushing to the node or getting from
// it, and its bytes are checked. For the processes, the resident set is
// read settled before each transfer and its high-water mark after. The
// kernel's sockets use CUBIC, as most Linux systems do (this machine's
// default is BBR, which does not slow down for random loss). Before each
// transfer the emulator's loss restarts from a seed of the run, profile
// and direction, so that the three nodes of a row meet the same loss
// pattern (the nth packet of a direction is lost for each) and a row
// compares stacks rather than their luck.
//
// It runs only for scripts/bench.sh, which sets MICROLINK_BENCH_OUT to the
// directory the results (tcp_impaired.jsonl) go to. MICROLINK_TCP_RUNS
// sets the runs per row (3), MICROLINK_TCP_QUICK=1 makes it a smoke run,
// MICROLINK_TCP_PROFILES=0,2 runs only those of linkemu.Profiles, and
// MICROLINK_TCP_IMPLS=microlink only those nodes (kernel, gvisor,
// microlink). For a closer look, MICROLINK_TCP_DIRS=push (or get) runs
// one direction, MICROLINK_TCP_MIB sets every transfer's
// size in MiB and MICROLINK_TCP_CPUPROFILE=1 writes a CPU profile of each
// transfer of the gVisor and microlink processes to the results
// directory (tcp-IMPL-PROFILE-RUN-DIRECTION.prof).
func TestTCPImpaired(t *testing.T) {
	out := os.Getenv("MICROLINK_BENCH_OUT")
	if out == "" {
		t.Skip("a benchmark: run by scripts/bench.sh, which sets MICROLINK_BENCH_OUT")
	}
	if err := lab.TUNAvailable(); err != nil {
		t.Skipf("needs tailscaled in TUN mode: %v", err)
	}
	quick := os.Getenv("MICROLINK_TCP_QUICK") == "1"
	runs, _ := strconv.Atoi(os.Getenv("MICROLINK_TCP_RUNS"))
	if runs <= 0 {
		runs = 3
	}
	profiles := linkemu.Profiles
	// 8 MiB where loss holds the rate near 0.3 MB/s: about 70 losses a
	// transfer, so that a run's rate depends less on where a few fell.
	sizes := map[string]int64{profiles[0].Name: 32 << 20, profiles[1].Name: 8 << 20, profiles[2].Name: 8 << 20, profiles[3].Name: 32 << 20}
	if quick {
		profiles, runs = profiles[:1], 1
		sizes[profiles[0].Name] = 4 << 20
	}
	if mib, _ := strconv.Atoi(os.Getenv("MICROLINK_TCP_MIB")); mib > 0 {
		for name := range sizes {
			sizes[name] = int64(mib) << 20
		}
	}
	cpuProfile := os.Getenv("MICROLINK_TCP_CPUPROFILE") == "1"
	if only := os.Getenv("MICROLINK_TCP_PROFILES"); only != "" {
		// Indices into linkemu.Profiles, for a look at some rows.
		var some []linkemu.Profile
		for _, f := range strings.Split(only, ",") {
			if i, err := strconv.Atoi(f); err == nil && i >= 0 && i < len(linkemu.Profiles) {
				some = append(some, linkemu.Profiles[i])
			}
		}
		profiles = some
	}
	dirs := []bool{true, false}
	switch os.Getenv("MICROLINK_TCP_DIRS") {
	case "push":
		dirs = dirs[:1]
	case "get":
		dirs = dirs[1:]
	}
	res, err := os.Create(filepath.Join(out, "tcp_impaired.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	record := func(v any) {
		b, _ := json.Marshal(v)
		res.Write(append(b, '\n'))
	}

	p, err := linkemu.NewPath(linkemu.PathOptions{Seed: uint64(time.Now().UnixNano())})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	l := lab.Start(t, lab.Options{ListenAddr: p.Local, Logf: func(string, ...any) {}})
	p.Emulator.Exclude(l.STUNAddr.Port())
	// A loopback control URL in the far peer's namespace: tailscaled soon
	// gives up an http:// one whose host is not loopback ("TLS forced").
	fwd, err := linkemu.Listen(p.PeerNS, "tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lab.ForwardFrom(t, fwd, strings.TrimPrefix(l.ControlURL, "http://"))
	peer := l.StartTailscaled(t, lab.TSOptions{Hostname: "far-peer", TUN: true, Netns: p.PeerNS,
		ControlURL: "http://" + fwd.Addr().String(), AuthKey: l.AuthKey})

	type target struct {
		impl string
		ip   netip.Addr
		proc *tcpNodeProc // nil for the kernel
	}
	kernel := l.StartTailscaled(t, lab.TSOptions{Hostname: "node-kernel", TUN: true})
	lc := net.ListenConfig{Control: cubic}
	kl, err := lc.Listen(context.Background(), "tcp4", netip.AddrPortFrom(kernel.IPv4(), 9100).String())
	if err != nil {
		t.Fatal(err)
	}
	defer kl.Close()
	go tcpxfer.Serve(kl)
	targets := []target{{impl: "kernel", ip: kernel.IPv4()}}
	for _, impl := range []string{"gvisor", "microlink"} {
		proc := startTCPNode(t, l, impl, "node-"+impl)
		targets = append(targets, target{impl, proc.ip, proc})
	}
	if only := os.Getenv("MICROLINK_TCP_IMPLS"); only != "" {
		targets = slices.DeleteFunc(targets, func(tg target) bool { return !slices.Contains(strings.Split(only, ","), tg.impl) })
	}
	for _, tg := range targets {
		waitFarDirect(t, peer, tg.ip)
	}
	record(map[string]any{"kind": "setup", "kernel_cc": "cubic", "runs": runs, "quick": quick, "paired_loss": true})

	p.Emulator.Set(linkemu.Impairment{Delay: 25 * time.Millisecond}, linkemu.Impairment{Delay: 25 * time.Millisecond})
	for _, tg := range targets {
		if tg.proc != nil {
			record(idleConns(t, p, tg.impl, tg.ip, tg.proc, 64))
		}
	}

	for run := 1; run <= runs; run++ {
		for pi, prof := range profiles {
			p.Emulator.Set(prof.Out, prof.In)
			for _, tg := range targets {
				for _, push := range dirs {
					// Every node meets the same loss pattern in the same
					// run, profile and direction, and so does every
					// benchmark: the comparison is of the stacks, not
					// of their luck.
					seed := uint64(run*100 + pi*2)
					if push {
						seed++
					}
					p.Emulator.Reseed(seed)
					r := tcpRun{Kind: "transfer", Profile: prof.Name, Impl: tg.impl, Run: run, Push: push, Size: sizes[prof.Name]}
					if tg.proc != nil {
						m := tg.proc.cmd(t, "mem")
						r.IdleRSS, r.IdleHeap = int64(number(m["rss"])), int64(number(m["heap"]))
						r.Alloc, r.GCs = int64(number(m["total_alloc"])), int(number(m["gcs"]))
						tg.proc.cmd(t, "clear")
						if cpuProfile {
							tg.proc.cmd(t, fmt.Sprintf("profile %s", filepath.Join(out, fmt.Sprintf("tcp-%s-%d-%d-%s.prof", tg.impl, pi, run, dirName(push)))))
						}
						r.CPU = -tg.proc.cpuTime()
					}
					r.measure(p, tg.ip)
					if tg.proc != nil {
						r.CPU += tg.proc.cpuTime()
						if cpuProfile {
							tg.proc.cmd(t, "stop")
						}
						m := tg.proc.cmd(t, "peak")
						r.PeakRSS = int64(number(m["hwm"]))
						r.Alloc = int64(number(m["total_alloc"])) - r.Alloc
						r.GCs = int(number(m["gcs"])) - r.GCs
					}
					t.Logf("run %d, %s, %s, push %v: %.2f MB/s in %.1f s, %d KiB direct, %d/%d packets, lost %d+%d queue %d socket %d, peak RSS +%d KiB, %d KiB allocated, %d GCs, %.2f s CPU; far peer: rtt %.0f ms, cwnd %d, %d resent, rwnd-limited %.0f%%, sndbuf-limited %.0f%%, reordering %d, reorderings seen %d, D-SACKs %d:%s: %s",
						run, prof.Name, tg.impl, push, r.MBps, r.Seconds, r.Direct>>10, r.Packets, r.AckPackets, r.Lost, r.AckLost, r.QueueDrops, r.RcvbufErrs,
						(r.PeakRSS-r.IdleRSS)>>10, r.Alloc>>10, r.GCs, r.CPU, r.PeerRTTms, r.PeerCwnd, r.PeerRetrans,
						100*r.PeerRwndLimited, 100*r.PeerSndbufLimited, r.PeerReordering, r.PeerReordSeen, r.PeerDSACKs, r.peerEvents(), r.Err)
					record(r)
				}
			}
		}
	}
}

// tcpRun is one transfer, as tcp_impaired.jsonl records it.
type tcpRun struct {
	Kind, Profile, Impl string
	Run                 int
	Push                bool // the far peer pushes to the node; else it gets from it
	Size                int64
	Seconds, MBps       float64
	Direct              int64 // UDP bytes the emulator carried in the data's direction, STUN aside
	// Packets the emulator lost (impairment) or dropped (queue) in the
	// data's direction and the ACKs', and UDP datagrams the receiving
	// and sending namespaces' sockets dropped (UdpRcvbufErrors): where a
	// slow run lost its packets.
	Lost, QueueDrops, AckLost int64 `json:",omitempty"`
	// Direct-path datagrams the emulator sent on in each direction: the
	// data's segments and the ACKs that answer them.
	Packets, AckPackets int64 `json:",omitempty"`
	RcvbufErrs          int64 `json:",omitempty"`
	Err                 string
	IdleRSS, PeakRSS    int64 `json:",omitempty"`
	IdleHeap            int64 `json:",omitempty"`
	Alloc               int64 `json:",omitempty"` // bytes the process allocated during the transfer
	GCs                 int   `json:",omitempty"` // collections during it
	// CPU is the seconds of CPU time (user and system) the node's
	// process used during the transfer.
	CPU float64 `json:",omitempty"`
	// The far peer's socket after the transfer (TCP_INFO): its smoothed
	// round trip and congestion window, the segments it resent, and, for
	// a push (where it sends), the share of the time it was sending that
	// the node's receive window limited it.
	PeerRTTms         float64 `json:",omitempty"`
	PeerCwnd          int     `json:",omitempty"`
	PeerRetrans       int     `json:",omitempty"`
	PeerRwndLimited   float64 `json:",omitempty"`
	PeerSndbufLimited float64 `json:",omitempty"`
	// How the far peer's sender judged the node's ACKs: the reordering
	// it assumed (segments), the reorderings it saw, and the D-SACKs
	// that told it a retransmission was not needed.
	PeerReordering int `json:",omitempty"`
	PeerReordSeen  int `json:",omitempty"`
	PeerDSACKs     int `json:",omitempty"`
	// The far peer's TcpExt counters over the transfer (peerTCPEvents).
	PeerEvents map[string]int64 `json:",omitempty"`
}

// peerEvents formats PeerEvents for the log, in peerTCPEvents' order.
func (r *tcpRun) peerEvents() string {
	var b strings.Builder
	for _, name := range peerTCPEvents {
		fmt.Fprintf(&b, " %s=%d", name, r.PeerEvents[name])
	}
	return b.String()
}

// dirName names a transfer's direction in file names.
func dirName(push bool) string {
	if push {
		return "push"
	}
	return "get"
}

func (r *tcpRun) measure(p *linkemu.Path, ip netip.Addr) {
	out0, in0 := p.Counters()
	errs0 := rcvbufErrors(p)
	var ext0, ext1 map[string]int64
	linkemu.In(p.PeerNS, func() error { ext0 = tcpExt(); return nil })
	defer func() {
		linkemu.In(p.PeerNS, func() error { ext1 = tcpExt(); return nil })
		r.PeerEvents = map[string]int64{}
		for _, name := range peerTCPEvents {
			r.PeerEvents[name] = ext1[name] - ext0[name]
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	c, err := dialFar(ctx, p, netip.AddrPortFrom(ip, 9100))
	cancel()
	if err != nil {
		r.Err = "dial: " + err.Error()
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Minute))
	start := time.Now()
	if r.Push {
		err = tcpxfer.Push(c, r.Size)
	} else {
		err = tcpxfer.Get(c, r.Size)
	}
	d := time.Since(start)
	r.Seconds, r.MBps = d.Seconds(), float64(r.Size)/d.Seconds()/1e6
	if err != nil {
		r.Err = err.Error()
	}
	r.peerInfo(c)
	// The emulator's out is toward the far peer.
	out1, in1 := p.Counters()
	data0, data1, ack0, ack1 := out0, out1, in0, in1
	if r.Push {
		data0, data1, ack0, ack1 = in0, in1, out0, out1
	}
	r.Direct = int64(data1.UDPBytes - data0.UDPBytes)
	r.Lost, r.QueueDrops = int64(data1.Lost-data0.Lost), int64(data1.QueueDrops-data0.QueueDrops)
	r.AckLost = int64(ack1.Lost - ack0.Lost + ack1.QueueDrops - ack0.QueueDrops)
	r.Packets, r.AckPackets = int64(data1.UDP-data0.UDP), int64(ack1.UDP-ack0.UDP)
	r.RcvbufErrs = rcvbufErrors(p) - errs0
}

// peerInfo records the far peer's TCP_INFO of c.
func (r *tcpRun) peerInfo(c net.Conn) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return
	}
	var info *unix.TCPInfo
	rc.Control(func(fd uintptr) { info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) })
	if err != nil || info == nil {
		return
	}
	r.PeerRTTms = float64(info.Rtt) / 1000
	r.PeerCwnd, r.PeerRetrans = int(info.Snd_cwnd), int(info.Total_retrans)
	r.PeerReordering, r.PeerReordSeen, r.PeerDSACKs = int(info.Reordering), int(info.Reord_seen), int(info.Dsack_dups)
	if r.Push && info.Busy_time > 0 {
		r.PeerRwndLimited = float64(info.Rwnd_limited) / float64(info.Busy_time)
		r.PeerSndbufLimited = float64(info.Sndbuf_limited) / float64(info.Busy_time)
	}
}

// rcvbufErrors returns the UDP datagrams that the sockets of the test's
// namespace and of the far peer's dropped for want of buffer room.
func rcvbufErrors(p *linkemu.Path) int64 {
	n := udpRcvbufErrors()
	linkemu.In(p.PeerNS, func() error { n += udpRcvbufErrors(); return nil })
	return n
}

// procCounters reads the counters of one kind (a line prefix such as
// "Udp:" or "TcpExt:") from a /proc/net file of the calling thread's
// network namespace: a line of names, then one of values.
func procCounters(file, kind string) map[string]int64 {
	m := map[string]int64{}
	b, err := os.ReadFile("/proc/thread-self/net/" + file)
	if err != nil {
		return m
	}
	var names []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != kind {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, name := range names[1:] {
			if i+1 < len(f) {
				m[name], _ = strconv.ParseInt(f[i+1], 10, 64)
			}
		}
	}
	return m
}

// tcpExt reads the TcpExt counters of the calling thread's namespace.
func tcpExt() map[string]int64 { return procCounters("netstat", "TcpExt:") }

// peerTCPEvents are the far peer's sender events worth a look, as
// TcpExt names them.
var peerTCPEvents = []string{"TCPTimeouts", "TCPLossProbes", "TCPLossProbeRecovery", "TCPSackRecovery",
	"TCPFastRetrans", "TCPSlowStartRetrans", "TCPLostRetransmit", "TCPSACKReorder", "TCPDSACKRecv",
	"TCPSpuriousRTOs", "TCPSackRecoveryFail", "TCPDelivered"}

// udpRcvbufErrors reads UdpRcvbufErrors in the calling thread's network
// namespace.
func udpRcvbufErrors() int64 { return procCounters("snmp", "Udp:")["RcvbufErrors"] }

// dialFar dials from the far peer's namespace, with CUBIC.
func dialFar(ctx context.Context, p *linkemu.Path, dst netip.AddrPort) (net.Conn, error) {
	var c net.Conn
	err := linkemu.In(p.PeerNS, func() (err error) {
		d := net.Dialer{Control: cubic}
		c, err = d.DialContext(ctx, "tcp4", dst.String())
		return err
	})
	return c, err
}

// cubic sets a socket's congestion control to CUBIC. The namespaces
// take their default from the host, and only the host's namespace may
// make CUBIC the default where it is not in the allowed list.
func cubic(network, address string, c syscall.RawConn) error {
	var err error
	c.Control(func(fd uintptr) {
		err = unix.SetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION, "cubic")
	})
	return err
}

// idleConns opens n connections from the far peer to the node, lets them
// go idle, and records what they cost the node's process.
func idleConns(t *testing.T, p *linkemu.Path, impl string, ip netip.Addr, proc *tcpNodeProc, n int) map[string]any {
	before := proc.cmd(t, "mem")
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := dialFar(ctx, p, netip.AddrPortFrom(ip, 9100))
		cancel()
		if err != nil {
			return map[string]any{"kind": "idle_conns", "impl": impl, "err": err.Error()}
		}
		conns = append(conns, c)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tcpxfer.Hold(c); err != nil {
			return map[string]any{"kind": "idle_conns", "impl": impl, "err": err.Error()}
		}
	}
	time.Sleep(3 * time.Second) // idle long enough to shrink
	after := proc.cmd(t, "mem")
	return map[string]any{"kind": "idle_conns", "impl": impl, "conns": n,
		"rss_before": before["rss"], "rss_after": after["rss"], "heap_before": before["heap"], "heap_after": after["heap"]}
}

// waitFarDirect waits until the far peer reaches ip over a direct path.
func waitFarDirect(t *testing.T, peer *lab.Tailscaled, ip netip.Addr) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		peer.Ping(ctx, ip, "TSMP")
		res, err := peer.Ping(ctx, ip, "disco")
		cancel()
		if err == nil && res.Endpoint != "" {
			return
		}
		if time.Now().After(deadline) {
			st, _ := peer.Status(context.Background())
			var p *ipnstate.PeerStatus
			for _, ps := range st.Peer {
				for _, a := range ps.TailscaleIPs {
					if a == ip {
						p = ps
					}
				}
			}
			t.Fatalf("no direct path from the far peer to %v: %v (peer %+v)", ip, err, p)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

var (
	tcpNodeOnce sync.Once
	tcpNodeBins map[string]string
	tcpNodeErr  error
)

// tcpNodeProc is a running tcpnode.
type tcpNodeProc struct {
	ip     netip.Addr
	pid    int
	in     *bufio.Writer
	stdin  interface{ Close() error }
	lines  chan map[string]any
	stderr *lockedWriter
	cmdMu  sync.Mutex
}

func startTCPNode(t *testing.T, l *lab.Lab, impl, hostname string) *tcpNodeProc {
	t.Helper()
	tcpNodeOnce.Do(func() {
		dir, err := os.MkdirTemp("", "microlink-tcpnode")
		if err != nil {
			tcpNodeErr = err
			return
		}
		tcpNodeBins = map[string]string{"microlink": filepath.Join(dir, "tcpnode-microlink"), "gvisor": filepath.Join(dir, "tcpnode")}
		for impl, tags := range map[string]string{"microlink": "microlinkonly", "gvisor": ""} {
			out, err := exec.Command("go", "build", "-trimpath", "-tags="+tags, "-o", tcpNodeBins[impl], "./tcpnode").CombinedOutput()
			if err != nil {
				tcpNodeErr = fmt.Errorf("go build -tags=%q ./bench/tcpnode: %v\n%s", tags, err, out)
				return
			}
		}
	})
	if tcpNodeErr != nil {
		t.Fatal(tcpNodeErr)
	}
	flagImpl := impl
	if impl == "gvisor" {
		flagImpl = "tsnet"
	}
	p := &tcpNodeProc{lines: make(chan map[string]any, 4), stderr: &lockedWriter{w: new(bytes.Buffer)}}
	cmd := exec.Command(tcpNodeBins[impl], "-impl", flagImpl, "-control", l.ControlURL, "-authkey", l.AuthKey,
		"-hostname", hostname, "-dir", t.TempDir(), "-port", "9100")
	cmd.Env = append(os.Environ(), "TS_ASSUME_NETWORK_UP_FOR_TEST=1", "TS_DISABLE_PORTMAPPER=1", "TS_PANIC_IF_HIT_MAIN_CONTROL=1")
	cmd.Stderr = p.stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.stdin, p.in = stdin, bufio.NewWriter(stdin)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.pid = cmd.Process.Pid
	done := make(chan struct{})
	go func() {
		defer close(done)
		dec := json.NewDecoder(stdout)
		for {
			var m map[string]any
			if err := dec.Decode(&m); err != nil {
				close(p.lines)
				return
			}
			p.lines <- m
		}
	}()
	t.Cleanup(func() {
		stdin.Close()
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		<-done
		if t.Failed() {
			t.Logf("tcpnode %s stderr:\n%s", hostname, p.stderr.String())
		}
	})
	ready := p.next(t)
	p.ip, err = netip.ParseAddr(fmt.Sprint(ready["ready"]))
	if err != nil {
		t.Fatalf("tcpnode %s ready line %v: %v", hostname, ready, err)
	}
	return p
}

// cpuTime returns the CPU time, user and system, the process has used so
// far in seconds.
func (p *tcpNodeProc) cpuTime() float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.pid))
	if err != nil {
		return 0
	}
	// The fields after the command name, which is in parentheses:
	// utime and stime are the 12th and 13th of them, in clock ticks.
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return float64(ut+st) / 100 // USER_HZ
}

// cmd sends a command and returns its answer.
func (p *tcpNodeProc) cmd(t *testing.T, c string) map[string]any {
	p.cmdMu.Lock()
	defer p.cmdMu.Unlock()
	p.in.WriteString(c + "\n")
	p.in.Flush()
	return p.next(t)
}

func (p *tcpNodeProc) next(t *testing.T) map[string]any {
	t.Helper()
	select {
	case m, ok := <-p.lines:
		if !ok {
			t.Fatalf("tcpnode ended early:\n%s", p.stderr.String())
		}
		return m
	case <-time.After(90 * time.Second):
		t.Fatalf("tcpnode said nothing for 90 s:\n%s", p.stderr.String())
	}
	return nil
}
