package tcptest

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/microlink-go/microlink"
	"github.com/microlink-go/microlink/interop/lab"
	"github.com/microlink-go/microlink/interop/linkemu"
	"github.com/microlink-go/microlink/interop/tcpxfer"
	"tailscale.com/ipn/ipnstate"
)

// impairedLab is a real tailscaled in TUN mode in a namespace of its own,
// behind the userspace link emulator, and a microlink node in the test's
// namespace with the lab's servers: every packet between the two peers,
// and between tailscaled and the servers, crosses the emulator.
type impairedLab struct {
	path *linkemu.Path
	lab  *lab.Lab
	ts   *lab.Tailscaled
	n    *microlink.Node
}

const xferPort = 9100

func startImpaired(t *testing.T, hostname string, seed uint64) *impairedLab {
	t.Helper()
	if err := lab.TUNAvailable(); err != nil {
		t.Skipf("needs the real peer in TUN mode: %v", err)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs the ip command")
	}
	p, err := linkemu.NewPath(linkemu.PathOptions{Seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	il := &impairedLab{path: p}
	il.lab = lab.Start(t, lab.Options{ListenAddr: p.Local})
	p.Emulator.Exclude(il.lab.STUNAddr.Port())
	il.ts = il.lab.StartTailscaled(t, lab.TSOptions{Hostname: "real-peer", TUN: true, Netns: p.PeerNS,
		ControlURL: forwardControl(t, p, il.lab), AuthKey: il.lab.AuthKey})
	il.n = lab.StartNode(t, lab.NodeOptions{ControlURL: il.lab.ControlURL, AuthKey: il.lab.AuthKey, Hostname: hostname})
	waitFor(t, 10*time.Second, "real-peer in the netmap", func() bool { _, ok := findPeer(il.n, "real-peer"); return ok })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := il.ts.WaitStatus(ctx, func(st *ipnstate.Status) bool {
		p := lab.FindPeer(st, hostname)
		return p != nil && p.Relay != ""
	}); err != nil {
		t.Fatalf("real peer never learned microlink's home DERP: %v", err)
	}
	ln, err := il.n.ListenTCP(xferPort)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go tcpxfer.Serve(ln)
	il.waitDirect(t)
	return il
}

// forwardControl returns a loopback URL in the peer's namespace for the
// lab's control server: tailscaled soon gives up an http:// control URL
// whose host is not loopback ("TLS forced"), and lab.StartTailscaled
// makes a loopback one only in the test's own namespace.
func forwardControl(t *testing.T, p *linkemu.Path, l *lab.Lab) string {
	t.Helper()
	ln, err := linkemu.Listen(p.PeerNS, "tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lab.ForwardFrom(t, ln, strings.TrimPrefix(l.ControlURL, "http://"))
	return "http://" + ln.Addr().String()
}

// waitDirect sends traffic both ways until both sides use the direct
// path through the emulator.
func (il *impairedLab) waitDirect(t *testing.T) {
	t.Helper()
	waitFor(t, 30*time.Second, "a direct path both ways", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		il.n.Ping(ctx, il.ts.IPv4().String(), microlink.PingTSMP)
		res, err := il.ts.Ping(ctx, il.n.IPv4(), "disco")
		p, _ := findPeer(il.n, "real-peer")
		return err == nil && res.Endpoint != "" && p.Path == "direct" && p.Endpoint.Addr() == il.path.Peer
	})
}

// run is one transfer.
type run struct {
	profile, dir string
	size         int64
	took         time.Duration
	direct       uint64 // UDP payload bytes the emulator carried in the data's direction outside STUN
	err          error
}

func (r run) String() string {
	return fmt.Sprintf("%s, %s, %d KiB: %v (%.2f MB/s), %d KiB direct: %v", r.profile, r.dir, r.size>>10,
		r.took.Round(time.Millisecond), float64(r.size)/r.took.Seconds()/1e6, r.direct>>10, r.err)
}

// transfer moves size bytes between the kernel's TCP in the peer's
// namespace and microlink's listener, toward microlink ("peer → node")
// or from it ("node → peer"), and measures it.
func (il *impairedLab) transfer(profile string, toNode bool, size int64, timeout time.Duration) run {
	r := run{profile: profile, dir: "node → peer", size: size}
	if toNode {
		r.dir = "peer → node"
	}
	out0, in0 := il.path.Counters()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := linkemu.Dial(ctx, il.path.PeerNS, "tcp4", netip.AddrPortFrom(il.n.IPv4(), xferPort).String())
	if err != nil {
		r.err = fmt.Errorf("dial: %w", err)
		return r
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	start := time.Now()
	if toNode {
		r.err = tcpxfer.Push(c, size)
	} else {
		r.err = tcpxfer.Get(c, size)
	}
	r.took = time.Since(start)
	out1, in1 := il.path.Counters()
	if toNode {
		r.direct = in1.UDPBytes - in0.UDPBytes
	} else {
		r.direct = out1.UDPBytes - out0.UDPBytes
	}
	return r
}

// TestImpairedPaths: on each path profile, the kernel's TCP behind a real
// tailscaled and microlink's TCP move data both ways through the
// emulator: intact, without an abort, and over the direct path (the
// emulator counts at least the data's size in UDP outside STUN).
// Throughput is measured by scripts/bench.sh, not asserted here.
func TestImpairedPaths(t *testing.T) {
	il := startImpaired(t, "ml-impaired", 1)
	for _, p := range linkemu.Profiles {
		t.Run(p.Name, func(t *testing.T) {
			il.path.Emulator.Set(p.Out, p.In)
			size := int64(2 << 20)
			if p.Out.Loss > 0 || p.Out.BurstEnter > 0 {
				size = 512 << 10
			}
			for _, toNode := range []bool{true, false} {
				r := il.transfer(p.Name, toNode, size, 2*time.Minute)
				t.Log(r)
				if r.err != nil {
					t.Errorf("%s: %v", r.dir, r.err)
					continue
				}
				if r.direct < uint64(size) {
					t.Errorf("%s: only %d of %d bytes crossed the direct path", r.dir, r.direct, size)
				}
			}
			if p, _ := findPeer(il.n, "real-peer"); p.Path != "direct" {
				t.Errorf("microlink's path is %q after the transfers", p.Path)
			}
		})
	}
	st := il.n.Stats()
	t.Logf("microlink: %d direct bytes in, %d out; %d relayed in, %d out; %d TCP retransmits",
		st.DirectBytesIn, st.DirectBytesOut, st.DERPBytesIn, st.DERPBytesOut, st.TCPRetransmits)
}

// TestImpairedDial: microlink dials the kernel's server on the peer
// across the 1% loss path, and moves data both ways.
func TestImpairedDial(t *testing.T) {
	il := startImpaired(t, "ml-impaired-dial", 2)
	p := linkemu.Profiles[1]
	il.path.Emulator.Set(p.Out, p.In)
	l, err := linkemu.Listen(il.path.PeerNS, "tcp4", netip.AddrPortFrom(il.ts.IPv4(), 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go tcpxfer.Serve(l)
	port := l.Addr().(*net.TCPAddr).Port
	for _, get := range []bool{false, true} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := il.n.DialTCP(ctx, "real-peer:"+strconv.Itoa(port))
		cancel()
		if err != nil {
			t.Fatalf("DialTCP: %v", err)
		}
		c.SetDeadline(time.Now().Add(time.Minute))
		if get {
			err = tcpxfer.Get(c, 512<<10)
		} else {
			err = tcpxfer.Push(c, 512<<10)
		}
		c.Close()
		if err != nil {
			t.Fatalf("get %v: %v", get, err)
		}
	}
}
