package headscaletest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/microlink-go/microlink"
	"github.com/microlink-go/microlink/interop/lab"
	"tailscale.com/ipn/ipnstate"
)

// The nodes, users and ports of TestHeadscaleACL.
const (
	aclMLName  = "ml-acl"
	aclTSName  = "ts-acl"
	aclOutName = "outsider"
	mlUser     = "mluser"
	tsUser     = "tsuser"
	outUser    = "outuser"

	mlAllowed = 9100 // tsUser may send UDP here on microlink
	mlDenied  = 9101 // listened on, but not allowed
	tsAllowed = 9200 // mlUser may send UDP here on the tailscaled
	tsDenied  = 9201
	mlClient  = 9300 // microlink's side of its flow to tsAllowed
	mlOther   = 9301 // listened on, no flow, not allowed
	outPort   = 9400 // mlUser may send UDP here on the outsider
)

// aclPolicy lets tsUser reach mlUser's nodes on UDP port mlPort, mlUser
// reach tsUser's nodes on UDP port tsAllowed and outUser's on UDP port
// outPort, and nothing else. It is HuJSON, with comments and trailing
// commas.
func aclPolicy(mlPort int) string {
	return fmt.Sprintf(`{
	// No "hosts", "groups" or tags: plain user sources and destinations.
	"acls": [
		{"action": "accept", "src": ["%[1]s@"], "proto": "udp", "dst": ["%[2]s@:%[3]d"]},
		{"action": "accept", "src": ["%[2]s@"], "proto": "udp", "dst": ["%[1]s@:%[4]d"]},
		// Headscale shows the outsider and microlink to each other,
		// since one may reach the other.
		{"action": "accept", "src": ["%[2]s@"], "proto": "udp", "dst": ["%[5]s@:%[6]d"]},
	],
}
`, tsUser, mlUser, mlPort, tsAllowed, outUser, outPort)
}

// deniedWait is how long the test waits for datagrams that must not
// arrive, once datagrams the policy allows have arrived on the same path.
const deniedWait = 2 * time.Second

// TestHeadscaleACL runs Headscale with aclPolicy, a microlink node of
// mlUser, a real tailscaled of tsUser in TUN mode and one of outUser, and
// checks with real traffic that microlink's packet filter, built from the
// netmap's PacketFilter, delivers what the policy allows and drops the
// rest: UDP from the tailscaled to mlAllowed arrives, UDP to mlDenied does
// not; ICMP echo requests from the outsider, which may reach nothing on
// microlink, get no answer while its disco and TSMP pings (which the
// filter does not govern) do. In the other direction microlink reaches
// the tailscaled's allowed port only, and the answer to that flow comes
// back through microlink's filter although the policy alone would drop
// it, while the flow opens no other port. Finally a policy reloaded by
// Headscale swaps the allowed and denied ports on microlink.
func TestHeadscaleACL(t *testing.T) {
	if err := lab.TUNAvailable(); err != nil {
		t.Skipf("needs a real peer in TUN mode: %v", err)
	}
	if g := lab.MicrolinkGoroutines(); len(g) != 0 {
		t.Fatalf("microlink goroutines before the test:\n%s", strings.Join(g, "\n\n"))
	}
	l := lab.Start(t, lab.Options{})
	hs := startHeadscalePolicy(t, l, aclPolicy(mlAllowed))
	mlKey := hs.preAuthKey(t, hs.createUser(t, mlUser))
	tsKey := hs.preAuthKey(t, hs.createUser(t, tsUser))

	n := lab.StartNode(t, lab.NodeOptions{ControlURL: hs.URL, AuthKey: mlKey, Hostname: aclMLName, Timeout: 30 * time.Second})
	ts := l.StartTailscaled(t, lab.TSOptions{
		Hostname:    aclTSName,
		TUN:         true,
		NeverDirect: true,
		ControlURL:  hs.URL,
		AuthKey:     tsKey,
	})
	// Each may reach the other, so Headscale shows each to the other.
	waitFor(t, 10*time.Second, aclTSName+" in microlink's netmap", func() bool {
		p, _ := n.Peer(aclTSName)
		return p.HomeDERP != 0
	})
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	if _, err := ts.WaitStatus(ctx, func(st *ipnstate.Status) bool {
		p := lab.FindPeer(st, aclMLName)
		return p != nil && p.Relay != ""
	}); err != nil {
		t.Fatalf("the tailscaled never saw %s: %v", aclMLName, err)
	}
	// The outsider is a second real peer, in userspace networking, of a
	// user the policy lets reach nothing on microlink.
	out := l.StartTailscaled(t, lab.TSOptions{
		Hostname:    aclOutName,
		NeverDirect: true,
		ControlURL:  hs.URL,
		AuthKey:     hs.preAuthKey(t, hs.createUser(t, outUser)),
	})
	waitFor(t, 10*time.Second, aclOutName+" in microlink's netmap", func() bool {
		p, _ := n.Peer(aclOutName)
		return p.HomeDERP != 0
	})
	mlIP, tsIP := n.IPv4(), ts.IPv4()

	listen := func(port uint16) *microlink.UDPConn {
		c, err := n.ListenUDP(port)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	allowed, denied := listen(mlAllowed), listen(mlDenied)
	client, other := listen(mlClient), listen(mlOther)
	osListen := func(port int) *net.UDPConn {
		c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(tsIP, uint16(port))))
		if err != nil {
			t.Fatalf("OS socket on the tailscaled's address: %v", err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	tsSrc, tsIn, tsOut := osListen(0), osListen(tsAllowed), osListen(tsDenied)

	// The tailscaled to microlink: the allowed port first, which also
	// proves the path, then the denied one with an allowed datagram
	// after each, so that the path is known to work while the denied
	// datagrams are dropped.
	tsSrcAddr := tsSrc.LocalAddr().(*net.UDPAddr).AddrPort()
	deliver(t, tsSrc, netip.AddrPortFrom(mlIP, mlAllowed), allowed, "first")
	dropped0 := n.Stats().Dropped
	const deniedCount = 3
	for i := range deniedCount {
		send(t, tsSrc, netip.AddrPortFrom(mlIP, mlDenied), fmt.Sprintf("denied %d", i))
		want := fmt.Sprintf("allowed %d", i)
		send(t, tsSrc, netip.AddrPortFrom(mlIP, mlAllowed), want)
		expect(t, allowed, want, tsSrcAddr)
	}

	// ICMP. As in Tailscale's own filter, an echo request is let in from
	// a source the rules allow to reach some port of the destination by
	// some protocol: the tailscaled's UDP port lets its ICMP ping through.
	if _, err := ts.PingRetry(ctx, mlIP, "ICMP", 3); err != nil {
		t.Errorf("the tailscaled's ICMP ping of microlink, which it may reach on UDP port %d: %v", mlAllowed, err)
	}
	// The outsider may reach no port of microlink. Its disco and TSMP
	// pings, which the filter does not govern, prove the path; its ICMP
	// ping then gets no answer. Microlink's own ICMP ping of the outsider,
	// whose UDP port it may reach, is answered.
	for _, typ := range []string{"disco", "TSMP"} {
		if _, err := out.PingRetry(ctx, mlIP, typ, 3); err != nil {
			t.Fatalf("the outsider's %s ping of microlink: %v", typ, err)
		}
	}
	pctx, pcancel := context.WithTimeout(ctx, deniedWait)
	res, err := out.Ping(pctx, mlIP, "ICMP")
	pcancel()
	if err == nil {
		t.Errorf("the outsider's ICMP ping of microlink was answered, the policy lets it reach nothing there: %+v", res)
	}
	if _, err := lab.PingRetry(ctx, n, out.IPv4().String(), microlink.PingICMP); err != nil {
		t.Errorf("microlink's ICMP ping of the outsider: %v", err)
	}

	// Microlink to the tailscaled: the allowed port, and the answer to
	// that flow back to microlink; the policy has no rule for it.
	deliver(t, client, netip.AddrPortFrom(tsIP, tsAllowed), tsIn, "to the tailscaled")
	send(t, tsIn, netip.AddrPortFrom(mlIP, mlClient), "answer")
	expect(t, client, "answer", netip.AddrPortFrom(tsIP, tsAllowed))
	// Not the denied port, which the tailscaled's filter drops.
	send(t, client, netip.AddrPortFrom(tsIP, tsDenied), "denied by the tailscaled")
	// The flow does not open microlink's other ports to the tailscaled.
	send(t, tsIn, netip.AddrPortFrom(mlIP, mlOther), "no flow")
	send(t, tsIn, netip.AddrPortFrom(mlIP, mlClient), "answer 2")
	expect(t, client, "answer 2", netip.AddrPortFrom(tsIP, tsAllowed))

	// Nothing arrives on the denied sockets.
	deadline := time.Now().Add(deniedWait)
	errs := make(chan error, 3)
	for _, s := range []struct {
		name string
		c    udpSocket
	}{
		{fmt.Sprintf("microlink's port %d", mlDenied), denied},
		{fmt.Sprintf("microlink's port %d", mlOther), other},
		{fmt.Sprintf("the tailscaled's port %d", tsDenied), tsOut},
	} {
		go func() { errs <- nothingArrives(s.c, s.name, deadline) }()
	}
	for range 3 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	// Microlink counted the datagrams and the echo request it dropped.
	if d := n.Stats().Dropped - dropped0; d < deniedCount+2 {
		t.Errorf("microlink counted %d dropped packets, want at least %d", d, deniedCount+2)
	}
	if t.Failed() {
		return
	}

	// A new policy reaches microlink on its open map stream and replaces
	// the rules: mlDenied is allowed, mlAllowed no longer.
	hs.setPolicy(t, aclPolicy(mlDenied))
	deliver(t, tsSrc, netip.AddrPortFrom(mlIP, mlDenied), denied, "after the reload")
	send(t, tsSrc, netip.AddrPortFrom(mlIP, mlAllowed), "revoked")
	send(t, tsSrc, netip.AddrPortFrom(mlIP, mlDenied), "allowed now")
	expect(t, denied, "allowed now", tsSrcAddr)
	if err := nothingArrives(allowed, fmt.Sprintf("microlink's port %d", mlAllowed), time.Now().Add(deniedWait)); err != nil {
		t.Error(err)
	}

	if err := n.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	lab.WaitNoMicrolinkGoroutines(t, 5*time.Second)
}

// udpSocket is what the test needs of a microlink or an OS UDP socket.
type udpSocket interface {
	ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error)
	WriteToUDPAddrPort(b []byte, dst netip.AddrPort) (int, error)
	SetReadDeadline(t time.Time) error
}

// send writes one datagram.
func send(t *testing.T, c udpSocket, dst netip.AddrPort, msg string) {
	t.Helper()
	if _, err := c.WriteToUDPAddrPort([]byte(msg), dst); err != nil {
		t.Fatalf("sending %q to %v: %v", msg, dst, err)
	}
}

// deliver sends msg from c to dst until it arrives at r, for the first
// datagram of a path, which may wait for a WireGuard handshake.
func deliver(t *testing.T, c udpSocket, dst netip.AddrPort, r udpSocket, msg string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	buf := make([]byte, 1500)
	for time.Now().Before(deadline) {
		send(t, c, dst, msg)
		r.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		for {
			nr, _, err := r.ReadFromUDPAddrPort(buf)
			if err != nil {
				break
			}
			if string(buf[:nr]) == msg {
				drain(r)
				return
			}
		}
	}
	t.Fatalf("%q sent to %v never arrived", msg, dst)
}

// drain discards the datagrams waiting in r, such as the copies deliver
// sent while the path came up.
func drain(r udpSocket) {
	buf := make([]byte, 1500)
	for {
		r.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if _, _, err := r.ReadFromUDPAddrPort(buf); err != nil {
			return
		}
	}
}

// expect reads one datagram from r, which must be msg from the sender
// from, within 5 s.
func expect(t *testing.T, r udpSocket, msg string, from netip.AddrPort) {
	t.Helper()
	buf := make([]byte, 1500)
	r.SetReadDeadline(time.Now().Add(5 * time.Second))
	nr, src, err := r.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("waiting for %q: %v", msg, err)
	}
	if string(buf[:nr]) != msg || src != from {
		t.Fatalf("got %q from %v, want %q from %v", buf[:nr], src, msg, from)
	}
}

// nothingArrives reads from c until deadline and reports any datagram.
func nothingArrives(c udpSocket, name string, deadline time.Time) error {
	buf := make([]byte, 1500)
	c.SetReadDeadline(deadline)
	nr, src, err := c.ReadFromUDPAddrPort(buf)
	switch {
	case err == nil:
		return fmt.Errorf("%s received %q from %v, which the policy denies", name, buf[:nr], src)
	case errors.Is(err, os.ErrDeadlineExceeded), isTimeout(err):
		return nil
	default:
		return fmt.Errorf("%s: %v", name, err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
