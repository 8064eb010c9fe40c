package magicsock

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/microlink-go/microlink/internal/disco"
)

// canary is a UDP socket at an address a hostile peer names, to see
// whether the node sends anything there.
type canary struct {
	pc   *net.UDPConn
	addr netip.AddrPort
}

func newCanary(t *testing.T, ip string) *canary {
	t.Helper()
	pc, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(ip), 0)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return &canary{pc: pc, addr: pc.LocalAddr().(*net.UDPAddr).AddrPort()}
}

// received returns the datagrams that arrive within d.
func (c *canary) received(d time.Duration) [][]byte {
	var out [][]byte
	buf := make([]byte, 2048)
	c.pc.SetReadDeadline(time.Now().Add(d))
	for {
		n, _, err := c.pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			return out
		}
		out = append(out, append([]byte(nil), buf[:n]...))
	}
}

// TestCallMeMaybeUnsafeCandidates: a peer's call-me-maybe naming the DERP
// placeholder, loopback, multicast, link-local or unspecified addresses
// adds no candidate, and a pong forged for such an address cannot make
// the node send its WireGuard messages there.
func TestCallMeMaybeUnsafeCandidates(t *testing.T) {
	d := &captureDERP{sent: make(chan relayed, 64)}
	// Bound to every address, as a node is: loopback is not a path to a
	// peer then.
	a := newNode(t, nil, Options{DERP: d, BindIPv4: netip.IPv4Unspecified()})
	aAddr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), a.LocalPort())
	p := newRawPeer(t)
	a.SetPeers([]Peer{p.peer()})

	placeholder := newCanary(t, DERPMagicIP.String()) // 127.3.3.40:R
	loopback := newCanary(t, "127.0.0.1")
	canaries := []*canary{placeholder, loopback}
	cmm := &disco.CallMeMaybe{MyNumber: []netip.AddrPort{
		placeholder.addr, loopback.addr,
		netip.MustParseAddrPort("127.0.0.1:0"),
		netip.MustParseAddrPort("224.0.0.1:9"),
		netip.MustParseAddrPort("255.255.255.255:9"),
		netip.MustParseAddrPort("169.254.1.1:9"),
		netip.MustParseAddrPort("[fe80::1]:9"),
		netip.MustParseAddrPort("[ff02::1]:9"),
		netip.MustParseAddrPort("0.0.0.0:9"),
		netip.MustParseAddrPort("[::]:9"),
		netip.MustParseAddrPort("[::1]:9"),
	}}
	a.ReceiveDERP(1, p.node.NodePublic(), p.sealer.Seal(nil, a.DiscoPublic(), cmm))

	// Answer every ping the node sends anywhere with a pong from the
	// address it was meant for, as an attacker on the host could, and
	// keep what else arrives there.
	answer := func(ping *disco.Ping, from *canary) {
		pong := p.sealer.Seal(nil, a.DiscoPublic(), &disco.Pong{TxID: ping.TxID, Src: aAddr})
		from.pc.WriteToUDPAddrPort(pong, aAddr)
	}
	got := make([][][]byte, len(canaries))
	var wg sync.WaitGroup
	for i, c := range canaries {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 2048)
			c.pc.SetReadDeadline(time.Now().Add(time.Second))
			for {
				n, _, err := c.pc.ReadFromUDPAddrPort(buf)
				if err != nil {
					return
				}
				m, ok := p.sealer.Open(buf[:n], a.DiscoPublic())
				if ping, isPing := m.(*disco.Ping); ok && isPing {
					answer(ping, c)
					continue
				}
				got[i] = append(got[i], append([]byte(nil), buf[:n]...))
			}
		}()
	}
	deadline := time.After(300 * time.Millisecond)
collect:
	for {
		select {
		case r := <-d.sent:
			m, ok := p.sealer.Open(r.pkt, a.DiscoPublic())
			if ping, isPing := m.(*disco.Ping); ok && isPing && r.region == int(placeholder.addr.Port()) {
				answer(ping, placeholder)
			}
		case <-deadline:
			break collect
		}
	}
	for range 5 {
		a.Send(p.node.NodePublic(), []byte(wgMsg))
	}
	wg.Wait()
	for i, c := range canaries {
		if len(got[i]) != 0 {
			t.Errorf("%v received %q", c.addr, got[i])
		}
	}
	if st, _ := a.PeerStatus(p.node.NodePublic()); len(st.Endpoints) != 0 || st.Addr.IsValid() {
		t.Fatalf("unsafe candidates accepted: %+v", st)
	}
}

// TestCallMeMaybeLoopbackWhenBoundToLoopback: a node bound only to
// loopback reaches its peers there, so loopback candidates stay usable.
func TestCallMeMaybeLoopbackWhenBoundToLoopback(t *testing.T) {
	a := newNode(t, nil, Options{DERP: &captureDERP{sent: make(chan relayed, 64)}})
	p := newRawPeer(t)
	a.SetPeers([]Peer{p.peer()})
	a.ReceiveDERP(1, p.node.NodePublic(), p.sealer.Seal(nil, a.DiscoPublic(), &disco.CallMeMaybe{MyNumber: []netip.AddrPort{p.addr, DERPAddr(int(p.addr.Port()))}}))
	st, _ := a.PeerStatus(p.node.NodePublic())
	if len(st.Endpoints) != 1 || st.Endpoints[0] != p.addr {
		t.Fatalf("candidates %v, want only %v", st.Endpoints, p.addr)
	}
}

// TestWriteUDPRefusesPlaceholder: whatever the path state says, nothing
// goes to the DERP placeholder address over UDP.
func TestWriteUDPRefusesPlaceholder(t *testing.T) {
	a := newNode(t, nil, Options{DERP: &captureDERP{sent: make(chan relayed, 64)}, BindIPv4: netip.IPv4Unspecified()})
	placeholder := newCanary(t, DERPMagicIP.String())
	if err := a.writeUDP([]byte(wgMsg), placeholder.addr); !errors.Is(err, ErrNotUDP) {
		t.Fatalf("writeUDP to the placeholder: %v", err)
	}
	p := newRawPeer(t)
	a.SetPeers([]Peer{p.peer()})
	a.mu.Lock()
	pp := a.peers[p.node.NodePublic()]
	pp.setBest(placeholder.addr, time.Millisecond, time.Now().Add(time.Minute))
	a.mu.Unlock()
	a.Send(p.node.NodePublic(), []byte(wgMsg))
	if got := placeholder.received(100 * time.Millisecond); len(got) != 0 {
		t.Fatalf("placeholder received %q", got)
	}
}

// TestCallMeMaybeCapped: one call-me-maybe adds at most
// maxCallMeMaybeEndpoints candidates, the first ones it lists.
func TestCallMeMaybeCapped(t *testing.T) {
	a := newNode(t, nil, Options{DERP: &captureDERP{sent: make(chan relayed, 64)}})
	p := newRawPeer(t)
	a.SetPeers([]Peer{p.peer()})
	cmm := &disco.CallMeMaybe{}
	for i := range 10000 {
		cmm.MyNumber = append(cmm.MyNumber, netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 1, byte(i >> 8), byte(i)}), 9))
	}
	// The largest call-me-maybe a DERP frame holds.
	cmm.MyNumber = cmm.MyNumber[:(64<<10-disco.Overhead-2)/18]
	a.ReceiveDERP(1, p.node.NodePublic(), p.sealer.Seal(nil, a.DiscoPublic(), cmm))
	st, _ := a.PeerStatus(p.node.NodePublic())
	if len(st.Endpoints) != maxCallMeMaybeEndpoints {
		t.Fatalf("%d candidates from one call-me-maybe, want %d", len(st.Endpoints), maxCallMeMaybeEndpoints)
	}
	for _, ap := range st.Endpoints {
		if !slices.Contains(cmm.MyNumber[:maxCallMeMaybeEndpoints], ap) {
			t.Fatalf("candidate %v is not among the first listed", ap)
		}
	}
	a.mu.Lock()
	pings := len(a.pings)
	a.mu.Unlock()
	if pings > maxCallMeMaybeEndpoints {
		t.Fatalf("%d pings outstanding", pings)
	}
}

// TestCallMeMaybeRateLimited: call-me-maybe messages from a peer beyond
// a small burst and a steady rate are dropped, so a peer cannot make the
// node ping candidates at the rate it sends them.
func TestCallMeMaybeRateLimited(t *testing.T) {
	tm := fastTiming
	tm.callMeMaybeInterval = time.Second
	a := newNodeTiming(t, nil, Options{DERP: &captureDERP{sent: make(chan relayed, 64)}}, tm)
	p := newRawPeer(t)
	a.SetPeers([]Peer{p.peer()})
	cmm := p.sealer.Seal(nil, a.DiscoPublic(), &disco.CallMeMaybe{MyNumber: []netip.AddrPort{p.addr}})
	start := time.Now()
	for range 50 {
		a.ReceiveDERP(1, p.node.NodePublic(), cmm)
		time.Sleep(2 * time.Millisecond)
	}
	elapsed := time.Since(start)
	pings := 0
	for _, m := range p.read(t, a, 200*time.Millisecond) {
		if _, ok := m.(*disco.Ping); ok {
			pings++
		}
	}
	// Every accepted call-me-maybe pings the one candidate at once.
	if most := callMeMaybeBurst + int(elapsed/tm.callMeMaybeInterval) + 1; pings > most || pings < callMeMaybeBurst {
		t.Fatalf("%d pings for 50 call-me-maybes in %v, want %d to %d", pings, elapsed, callMeMaybeBurst, most)
	}
}

// TestLearnedEndpointsBounded: pings from many source addresses leave at
// most maxLearned learned candidates, and never the DERP placeholder.
func TestLearnedEndpointsBounded(t *testing.T) {
	a := newNode(t, nil, Options{DERP: &captureDERP{sent: make(chan relayed, 64)}})
	p := newRawPeer(t)
	a.SetPeers([]Peer{p.peer()})
	a.mu.Lock()
	pp := a.peers[p.node.NodePublic()]
	for i := range 1000 {
		a.learnEndpoint(pp, netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 2, byte(i >> 8), byte(i)}), 9))
	}
	a.learnEndpoint(pp, DERPAddr(5))
	a.outbox = nil
	a.mu.Unlock()
	st, _ := a.PeerStatus(p.node.NodePublic())
	if len(st.Endpoints) != maxLearned || slices.Contains(st.Endpoints, DERPAddr(5)) {
		t.Fatalf("learned %v", st.Endpoints)
	}
}
