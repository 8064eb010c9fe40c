package magicsock

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/microlink-go/microlink/internal/disco"
	"github.com/microlink-go/microlink/internal/key"
	"github.com/microlink-go/microlink/internal/tailcfg"
)

// rawPeer is a hand-driven disco peer on a loopback UDP socket.
type rawPeer struct {
	node   key.Private
	sealer *disco.Sealer
	pc     *net.UDPConn
	addr   netip.AddrPort
}

func newRawPeer(t *testing.T) *rawPeer {
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return &rawPeer{node: key.NewPrivate(), sealer: disco.NewSealer(key.NewPrivate(), 0), pc: pc, addr: pc.LocalAddr().(*net.UDPAddr).AddrPort()}
}

func (p *rawPeer) peer() Peer {
	return Peer{Key: p.node.NodePublic(), DiscoKey: p.sealer.Public(), HomeDERP: 1}
}

func (p *rawPeer) send(t *testing.T, to *node, m disco.Message) {
	if _, err := p.pc.WriteToUDPAddrPort(p.sealer.Seal(nil, to.DiscoPublic(), m), to.udpTo); err != nil {
		t.Fatal(err)
	}
}

// read returns the disco messages that arrive within d.
func (p *rawPeer) read(t *testing.T, from *node, d time.Duration) []disco.Message {
	var out []disco.Message
	buf := make([]byte, 2048)
	p.pc.SetReadDeadline(time.Now().Add(d))
	for {
		n, _, err := p.pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			return out
		}
		if m, ok := p.sealer.Open(buf[:n], from.DiscoPublic()); ok {
			out = append(out, m)
		}
	}
}

// captureDERP records what a Conn relays.
type captureDERP struct{ sent chan relayed }

func (d *captureDERP) Send(region int, dst key.NodePublic, pkt []byte) error {
	select {
	case d.sent <- relayed{region, key.NodePublic{}, dst, append([]byte(nil), pkt...)}:
	default:
	}
	return nil
}
func (d *captureDERP) SetHome(int)  {}
func (d *captureDERP) Close() error { return nil }

func TestPingAnsweredOnce(t *testing.T) {
	a := newNode(t, nil, Options{DERP: &captureDERP{sent: make(chan relayed, 16)}})
	p := newRawPeer(t)
	a.SetPeers([]Peer{p.peer()})
	ping := &disco.Ping{TxID: [12]byte{1, 2, 3}, NodeKey: p.node.NodePublic()}
	p.send(t, a, ping)
	p.send(t, a, ping) // duplicate
	p.send(t, a, &disco.Ping{TxID: [12]byte{9}, NodeKey: p.node.NodePublic(), Padding: 100})
	msgs := p.read(t, a, 300*time.Millisecond)
	var pongs []*disco.Pong
	for _, m := range msgs {
		if pong, ok := m.(*disco.Pong); ok {
			pongs = append(pongs, pong)
		}
	}
	if len(pongs) != 2 || pongs[0].TxID != ping.TxID || pongs[1].TxID != [12]byte{9} {
		t.Fatalf("pongs %+v, want one per distinct ping", pongs)
	}
	if pongs[0].Src != p.addr {
		t.Fatalf("pong src %v, want %v", pongs[0].Src, p.addr)
	}
	st, _ := a.PeerStatus(p.node.NodePublic())
	if len(st.Endpoints) != 1 || st.Endpoints[0] != p.addr {
		t.Fatalf("learned endpoints %v, want %v", st.Endpoints, p.addr)
	}
}

func TestDiscoFromStrangersIgnored(t *testing.T) {
	a := newNode(t, nil, Options{DERP: &captureDERP{sent: make(chan relayed, 16)}})
	known, stranger := newRawPeer(t), newRawPeer(t)
	a.SetPeers([]Peer{known.peer()})
	stranger.send(t, a, &disco.Ping{TxID: [12]byte{1}})
	// A packet claiming the known key but sealed with another.
	forged := disco.Seal(nil, disco.SharedKey(key.NewPrivate(), a.DiscoPublic()), known.sealer.Public(), (&disco.Ping{TxID: [12]byte{2}}).AppendMarshal(nil))
	known.pc.WriteToUDPAddrPort(forged, a.udpTo)
	// A pong for a ping never sent.
	known.send(t, a, &disco.Pong{TxID: [12]byte{3}, Src: known.addr})
	if m := stranger.read(t, a, 100*time.Millisecond); len(m) != 0 {
		t.Fatalf("stranger got %v", m)
	}
	if m := known.read(t, a, 100*time.Millisecond); len(m) != 0 {
		t.Fatalf("forged ping answered: %v", m)
	}
	if st, _ := a.PeerStatus(known.node.NodePublic()); st.Addr.IsValid() || !st.LastPong.IsZero() {
		t.Fatalf("state changed: %+v", st)
	}
}

func TestPingOverDERP(t *testing.T) {
	d := &captureDERP{sent: make(chan relayed, 16)}
	a := newNode(t, nil, Options{DERP: d})
	p := newRawPeer(t)
	a.SetPeers([]Peer{p.peer()})
	ping := &disco.Ping{TxID: [12]byte{7}, NodeKey: p.node.NodePublic()}
	a.ReceiveDERP(5, p.node.NodePublic(), p.sealer.Seal(nil, a.DiscoPublic(), ping))
	select {
	case r := <-d.sent:
		if r.region != 5 || r.dst != p.node.NodePublic() {
			t.Fatalf("pong relayed via region %d to %v", r.region, r.dst)
		}
		m, ok := p.sealer.Open(r.pkt, a.DiscoPublic())
		pong, _ := m.(*disco.Pong)
		if !ok || pong == nil || pong.TxID != ping.TxID || pong.Src != DERPAddr(5) {
			t.Fatalf("reply %+v", m)
		}
	case <-time.After(time.Second):
		t.Fatal("no pong relayed")
	}
	// No endpoint is learned from a relayed ping.
	if st, _ := a.PeerStatus(p.node.NodePublic()); len(st.Endpoints) != 0 {
		t.Fatalf("endpoints %v", st.Endpoints)
	}
}

func TestCallMeMaybe(t *testing.T) {
	a := newNode(t, nil, Options{DERP: &captureDERP{sent: make(chan relayed, 64)}})
	p := newRawPeer(t)
	a.SetPeers([]Peer{p.peer()})
	cmm := &disco.CallMeMaybe{MyNumber: []netip.AddrPort{p.addr, netip.MustParseAddrPort("[fe80::1]:9")}}
	pings := func() int {
		n := 0
		for _, m := range p.read(t, a, 150*time.Millisecond) {
			if ping, ok := m.(*disco.Ping); ok && ping.NodeKey == a.key.NodePublic() {
				n++
			}
		}
		return n
	}
	// Not over UDP.
	p.send(t, a, cmm)
	if n := pings(); n != 0 {
		t.Fatalf("call-me-maybe over UDP caused %d pings", n)
	}
	// Not over DERP from another node key.
	a.ReceiveDERP(1, key.NewPrivate().NodePublic(), p.sealer.Seal(nil, a.DiscoPublic(), cmm))
	if n := pings(); n != 0 {
		t.Fatalf("call-me-maybe from the wrong node key caused %d pings", n)
	}
	a.ReceiveDERP(1, p.node.NodePublic(), p.sealer.Seal(nil, a.DiscoPublic(), cmm))
	if n := pings(); n != 1 {
		t.Fatalf("call-me-maybe caused %d pings, want 1", n)
	}
	st, _ := a.PeerStatus(p.node.NodePublic())
	if len(st.Endpoints) != 1 || st.Endpoints[0] != p.addr {
		t.Fatalf("endpoints %v (link-local must be skipped)", st.Endpoints)
	}
}

func TestSetPeersKeepsPaths(t *testing.T) {
	a, b, _ := pair(t)
	waitDirect(t, a, b)
	a.SetPeers([]Peer{b.asPeer(2)})
	st, _ := a.PeerStatus(b.key.NodePublic())
	if !st.Addr.IsValid() || st.DERPRegion != 2 {
		t.Fatalf("path lost on netmap update: %+v", st)
	}
	// A new disco key means a restarted peer: start over.
	moved := b.asPeer(2)
	moved.DiscoKey = key.NewPrivate().DiscoPublic()
	a.SetPeers([]Peer{moved})
	if st, _ := a.PeerStatus(b.key.NodePublic()); st.Addr.IsValid() {
		t.Fatalf("path kept across disco key change: %+v", st)
	}
	a.SetPeers(nil)
	if _, ok := a.PeerStatus(b.key.NodePublic()); ok {
		t.Fatal("removed peer still known")
	}
}

func TestSendStartsDiscovery(t *testing.T) {
	d := &captureDERP{sent: make(chan relayed, 16)}
	var rec recorder
	a := newNode(t, nil, rec.opts(Options{DERP: d}))
	a.SetDERPMap(&tailcfg.DERPMap{Regions: map[int]*tailcfg.DERPRegion{3: {RegionID: 3, Nodes: []*tailcfg.DERPNode{{Name: "3a", RegionID: 3, IPv4: "none", IPv6: "none", STUNPort: -1}}}}})
	waitFor(t, 2*time.Second, "endpoints", func() bool { return len(a.Endpoints()) > 0 })
	p := newRawPeer(t)
	pp := p.peer()
	pp.HomeDERP = 3
	pp.Endpoints = []netip.AddrPort{p.addr}
	a.SetPeers([]Peer{pp})
	if err := a.Send(p.node.NodePublic(), []byte(wgMsg)); err != nil {
		t.Fatal(err)
	}
	// Through DERP: the message, our endpoints, and (the peer has not
	// been heard from) a ping.
	var gotWG, gotCMM, gotPing bool
	for !gotWG || !gotCMM || !gotPing {
		select {
		case r := <-d.sent:
			if r.region != 3 || r.dst != p.node.NodePublic() {
				t.Fatalf("relayed via %d to %v", r.region, r.dst)
			}
			if string(r.pkt) == wgMsg {
				gotWG = true
				continue
			}
			m, ok := p.sealer.Open(r.pkt, a.DiscoPublic())
			if ping, isPing := m.(*disco.Ping); ok && isPing && ping.NodeKey == a.key.NodePublic() {
				gotPing = true
				continue
			}
			cmm, _ := m.(*disco.CallMeMaybe)
			if !ok || cmm == nil || len(cmm.MyNumber) != 1 || cmm.MyNumber[0] != a.udpTo {
				t.Fatalf("relayed %+v", m)
			}
			gotCMM = true
		case <-time.After(2 * time.Second):
			t.Fatalf("relayed WireGuard %v, call-me-maybe %v, ping %v", gotWG, gotCMM, gotPing)
		}
	}
	// And the direct candidate got a ping carrying our node key.
	found := false
	for _, m := range p.read(t, a, 200*time.Millisecond) {
		if ping, ok := m.(*disco.Ping); ok && ping.NodeKey == a.key.NodePublic() {
			found = true
		}
	}
	if !found {
		t.Fatal("no disco ping to the peer's endpoint")
	}
}

func TestUpdatePeers(t *testing.T) {
	a, b, _ := pair(t)
	c := newNode(t, nil, Options{})
	bKey, cKey := b.key.NodePublic(), c.key.NodePublic()
	waitDirect(t, a, b)

	// Adding c and changing b's home region keeps b's path.
	a.UpdatePeers([]Peer{b.asPeer(2), c.asPeer(1)}, nil)
	st, ok := a.PeerStatus(bKey)
	if !ok || !st.Trusted || st.DERPRegion != 2 {
		t.Fatalf("b after the update: %+v, %v", st, ok)
	}
	if _, ok := a.PeerStatus(cKey); !ok {
		t.Fatal("c not added")
	}
	if err := a.Send(cKey, []byte(wgMsg)); err != nil {
		t.Fatalf("send to the added peer: %v", err)
	}
	// A netmap endpoint that goes away takes the path with it.
	moved := b.asPeer(2)
	moved.Endpoints = nil
	a.UpdatePeers([]Peer{moved}, nil)
	if st, _ := a.PeerStatus(bKey); st.Addr.IsValid() {
		t.Fatalf("path kept after its endpoint left the netmap: %+v", st)
	}
	// A new disco key starts over; removal forgets the peer.
	a.UpdatePeers([]Peer{b.asPeer(2)}, nil)
	waitDirect(t, a, b)
	nd := b.asPeer(2)
	nd.DiscoKey = key.NewPrivate().DiscoPublic()
	a.UpdatePeers([]Peer{nd}, nil)
	if st, _ := a.PeerStatus(bKey); st.Addr.IsValid() {
		t.Fatalf("path kept across a disco key change: %+v", st)
	}
	a.UpdatePeers(nil, []key.NodePublic{bKey, cKey})
	if _, ok := a.PeerStatus(bKey); ok {
		t.Fatal("removed peer still known")
	}
	if err := a.Send(cKey, []byte(wgMsg)); err != ErrUnknownPeer {
		t.Fatalf("send to a removed peer: %v", err)
	}
	// Disco from the removed peer is ignored again.
	a.mu.Lock()
	n := len(a.byDisco)
	a.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d disco keys still known", n)
	}
}

func TestUpdatePeersAllocs(t *testing.T) {
	a := newNode(t, nil, Options{DERP: &captureDERP{sent: make(chan relayed, 1)}})
	var peers []Peer
	for i := range 1000 {
		peers = append(peers, Peer{Key: key.NewPrivate().NodePublic(), DiscoKey: key.NewPrivate().DiscoPublic(), HomeDERP: 1,
			Endpoints: []netip.AddrPort{netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), uint16(i))}})
	}
	a.SetPeers(peers)
	// Changing one peer's endpoints must not copy the table.
	upd := []Peer{peers[7]}
	allocs := testing.AllocsPerRun(50, func() {
		upd[0].Endpoints[0] = netip.AddrPortFrom(upd[0].Endpoints[0].Addr(), upd[0].Endpoints[0].Port()+1)
		a.UpdatePeers(upd, nil)
	})
	if allocs > 10 {
		t.Fatalf("%v allocations to update one of 1000 peers", allocs)
	}
}
