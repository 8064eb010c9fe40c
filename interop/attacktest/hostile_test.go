package attacktest

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/blake2s"

	"github.com/microlink-go/microlink/internal/control"
	"github.com/microlink-go/microlink/internal/derp"
	"github.com/microlink-go/microlink/internal/disco"
	"github.com/microlink-go/microlink/internal/key"
	"github.com/microlink-go/microlink/internal/netmap"
	"github.com/microlink-go/microlink/internal/packet"
	"github.com/microlink-go/microlink/internal/tailcfg"
	"github.com/microlink-go/microlink/internal/wireguard"
	"github.com/microlink-go/microlink/interop/lab"
)

// badRegionID is the DERP region of the misbehaving server, the hostile
// node's home.
const badRegionID = 901

// hostile is a node registered in the lab like any other, built from
// microlink's own protocol packages: a control client, a DERP client of
// the lab's relay, a disco sealer, a WireGuard device and a UDP socket.
// The suite drives it to attack the victim.
type hostile struct {
	t      *testing.T
	node   key.Private
	disco  *disco.Sealer
	ctl    *control.Client
	pc     *net.UDPConn // its endpoint, 127.0.0.1
	relay  *derp.Client // to the lab's DERP region
	wg     *wireguard.Device
	victim peerInfo

	mu          sync.Mutex
	self        *tailcfg.Node
	peers       *netmap.Map // the hostile node's netmap
	capture     bool        // WireGuard messages go to captured instead of out
	captured    [][]byte
	echoReplies map[uint16]int // ICMP echo replies by sequence number

	pongs      atomic.Int64 // disco pongs received
	onDERPPing atomic.Pointer[func(*disco.Ping)]
}

// peerInfo is what the hostile node knows of the victim from its netmap.
type peerInfo struct {
	key   key.NodePublic
	disco key.DiscoPublic
	addr  netip.Addr     // tailnet IPv4
	udp   netip.AddrPort // its UDP socket on loopback
}

func startHostile(t *testing.T, l *lab.Lab, node key.Private) *hostile {
	h := &hostile{
		t:           t,
		node:        node,
		disco:       disco.NewSealer(key.NewPrivate(), 0),
		peers:       netmap.New(netmap.Options{}),
		echoReplies: map[uint16]int{},
	}
	var err error
	h.pc, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.pc.Close() })
	h.ctl, err = control.New(control.Options{
		ServerURL:     l.ControlURL,
		MachineKey:    key.NewPrivate(),
		NodeKey:       h.node,
		AuthKey:       l.AuthKey,
		Hostinfo:      &tailcfg.Hostinfo{Hostname: "hostile", OS: "linux", IPNVersion: "attacktest"},
		OnMapResponse: h.apply,
	})
	if err != nil {
		t.Fatal(err)
	}
	h.ctl.SetDiscoKey(h.disco.Public())
	h.ctl.SetPreferredDERP(badRegionID)
	h.ctl.SetEndpoints([]control.Endpoint{{AddrPort: h.pc.LocalAddr().(*net.UDPAddr).AddrPort(), Type: tailcfg.EndpointLocal}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.ctl.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); h.ctl.Close(); <-done })

	relayNode := l.DERPMap.Regions[lab.DERPRegionID].Nodes[0]
	dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer dcancel()
	h.relay, err = derp.Dial(dctx, []derp.Node{{
		Name: relayNode.Name, RegionID: lab.DERPRegionID, HostName: relayNode.HostName,
		IPv4: relayNode.IPv4, IPv6: "none", DERPPort: relayNode.DERPPort, InsecureForTests: true,
	}}, derp.Options{PrivateKey: h.node})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.relay.Close() })
	h.relay.NotePreferred(false)

	h.wg, err = wireguard.NewDevice(wireguard.Config{PrivateKey: h.node, Send: h.sendWireGuard, Deliver: h.deliver})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.wg.Close() })
	return h
}

// apply keeps the netmap's self node and applies the message to its netmap.
func (h *hostile) apply(m *netmap.Message) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if m.Node != nil {
		h.self = m.Node
	}
	h.peers.Apply(m)
}

// waitVictim waits until the netmap names the victim with its disco key
// and endpoints, configures WireGuard for it, and starts reading what it
// sends.
func (h *hostile) waitVictim(name string) {
	h.t.Helper()
	var p *netmap.Peer
	lab.WaitFor(h.t, 20*time.Second, name+" in the hostile node's netmap", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		p = nil
		for _, q := range h.peers.Peers() {
			if q.Hostname == name {
				p = &q
			}
		}
		return h.self != nil && p != nil && !p.DiscoKey.IsZero() && len(p.Endpoints) > 0
	})
	h.victim = peerInfo{key: p.Key, disco: p.DiscoKey}
	for _, a := range p.Addresses {
		if a.Addr().Is4() {
			h.victim.addr = a.Addr()
		}
	}
	for _, ep := range p.Endpoints {
		if ep.Addr().IsLoopback() || !h.victim.udp.IsValid() {
			h.victim.udp = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), ep.Port())
		}
	}
	var allowed []netip.Prefix
	for _, a := range p.Addresses {
		allowed = append(allowed, netip.PrefixFrom(a.Addr(), a.Addr().BitLen()))
	}
	h.wg.SetPeers([]wireguard.PeerConfig{{Key: p.Key, AllowedIPs: allowed}})
	go h.readUDP()
	go h.readDERP()
}

// addr4 returns the hostile node's tailnet IPv4 address.
func (h *hostile) addr4() netip.Addr {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, a := range h.self.Addresses {
		if a.Addr().Is4() {
			return a.Addr()
		}
	}
	return netip.Addr{}
}

func (h *hostile) readUDP() {
	buf := make([]byte, 65535)
	for {
		n, src, err := h.pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		h.receive(buf[:n], src, false)
	}
}

func (h *hostile) readDERP() {
	for {
		m, err := h.relay.Recv()
		if err != nil {
			return
		}
		if rp, ok := m.(*derp.ReceivedPacket); ok && rp.Source == h.victim.key {
			h.receive(rp.Data, netip.AddrPort{}, true)
		}
	}
}

// receive handles what the victim sends: disco pings are answered where
// they came from, and WireGuard goes to the hostile node's device.
func (h *hostile) receive(pkt []byte, src netip.AddrPort, viaDERP bool) {
	if disco.LooksLikeDisco(pkt) {
		m, ok := h.disco.Open(pkt, h.victim.disco)
		if !ok {
			return
		}
		switch m := m.(type) {
		case *disco.Ping:
			if viaDERP {
				if f := h.onDERPPing.Load(); f != nil {
					(*f)(m)
				}
				return
			}
			h.pc.WriteToUDPAddrPort(h.disco.Seal(nil, h.victim.disco, &disco.Pong{TxID: m.TxID, Src: src}), src)
		case *disco.Pong:
			h.pongs.Add(1)
		}
		return
	}
	h.wg.ReceiveFrom(append([]byte(nil), pkt...), []byte(src.String()))
}

// sendWireGuard is the device's transport: straight to the victim's UDP
// socket, or into captured while capturing.
func (h *hostile) sendWireGuard(_ key.NodePublic, msg []byte) error {
	h.mu.Lock()
	if h.capture {
		h.captured = append(h.captured, append([]byte(nil), msg...))
		h.mu.Unlock()
		return nil
	}
	h.mu.Unlock()
	_, err := h.pc.WriteToUDPAddrPort(msg, h.victim.udp)
	return err
}

// deliver counts the ICMP echo replies the victim sends the hostile node.
func (h *hostile) deliver(_ key.NodePublic, pkt []byte) {
	var p packet.Parsed
	if p.Decode(pkt) != nil || !p.IsEchoReply() {
		return
	}
	h.mu.Lock()
	h.echoReplies[p.ICMPSeq]++
	h.mu.Unlock()
}

// echoRequest returns an ICMP echo request from the hostile node to the
// victim.
func (h *hostile) echoRequest(seq uint16) []byte {
	b := make([]byte, 100)
	n, err := packet.BuildEchoRequest(b, h.addr4(), h.victim.addr, 0x4854, seq, []byte("hostile"))
	if err != nil {
		h.t.Fatal(err)
	}
	return b[:n]
}

// replies returns how many echo replies arrived for each sequence number.
func (h *hostile) replies() map[uint16]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[uint16]int, len(h.echoReplies))
	for k, v := range h.echoReplies {
		out[k] = v
	}
	return out
}

// sendDisco seals m for the victim and sends it over the lab's DERP.
func (h *hostile) sendDiscoDERP(m disco.Message) error {
	return h.relay.Send(h.victim.key, h.disco.Seal(nil, h.victim.disco, m))
}

// mac1Key is the key of mac1 of handshake messages to the victim.
func (h *hostile) mac1Key() [32]byte {
	return blake2s.Sum256(append([]byte(wireguard.LabelMAC1), h.victim.key[:]...))
}

// setMAC1 computes mac1 of the handshake message msg with key k.
func setMAC1(msg []byte, k *[32]byte) {
	o1 := len(msg) - 32
	m, _ := blake2s.New128(k[:])
	m.Write(msg[:o1])
	copy(msg[o1:o1+16], m.Sum(nil))
	clear(msg[o1+16:])
}

// randomInitiation fills b (148 bytes) with a handshake initiation to the
// victim: random content with a valid mac1, which the victim can only
// refuse after a Diffie-Hellman computation.
func randomInitiation(b []byte, k *[32]byte) {
	rand.Read(b[4:116])
	binary.LittleEndian.PutUint32(b, wireguard.TypeInitiation)
	setMAC1(b, k)
}

// canary is a UDP socket at an address the hostile node names to the
// victim, counting what the victim sends there.
type canary struct {
	pc    *net.UDPConn
	addr  netip.AddrPort
	disco atomic.Int64 // disco packets received
	other atomic.Int64 // anything else
	pings chan *disco.Ping
}

func newCanary(t *testing.T, h *hostile, ip string) *canary {
	pc, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(ip), 0)))
	if err != nil {
		t.Fatal(err)
	}
	c := &canary{pc: pc, addr: pc.LocalAddr().(*net.UDPAddr).AddrPort(), pings: make(chan *disco.Ping, 64)}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 65535)
		for {
			n, _, err := pc.ReadFromUDPAddrPort(buf)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				continue
			}
			if !disco.LooksLikeDisco(buf[:n]) {
				c.other.Add(1)
				continue
			}
			c.disco.Add(1)
			if m, ok := h.disco.Open(buf[:n], h.victim.disco); ok {
				if p, ok := m.(*disco.Ping); ok {
					select {
					case c.pings <- p:
					default:
					}
				}
			}
		}
	}()
	return c
}
