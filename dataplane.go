package microlink

import (
	"encoding/binary"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"sync"

	"github.com/microlink-go/microlink/internal/key"
	"github.com/microlink-go/microlink/internal/magicsock"
	"github.com/microlink-go/microlink/internal/netmap"
	"github.com/microlink-go/microlink/internal/packet"
	"github.com/microlink-go/microlink/internal/tailcfg"
	"github.com/microlink-go/microlink/internal/tunnel"
	"github.com/microlink-go/microlink/internal/wireguard"
)

// dataPlane joins the layers a packet crosses: the tunnel stack (our IP
// endpoint), the WireGuard core and magicsock (UDP socket, disco, DERP).
// WireGuard and magicsock belong to one node key; the stack, and with it the
// application's sockets, outlives them when the key changes.
type dataPlane struct {
	logger    *slog.Logger
	stack     *tunnel.Stack
	wg        *wireguard.Device
	ms        *magicsock.Conn
	shieldsUp bool // no rules: only answers to our own traffic come in

	// endpoints and homeDERP are reported to control when they change.
	onEndpoints func([]magicsock.Endpoint)
	onHomeDERP  func(int)

	// peersApplied, set by tests, is called when apply has handed
	// changed peers to WireGuard and magicsock.
	peersApplied func()
	// policy picks the peers' routes WireGuard uses; exit is the exit
	// node in use, resolved from the netmap at every change of peers.
	policy   routePolicy
	served   []netip.Prefix
	exitMu   sync.Mutex
	exit     key.NodePublic
	exitSeen bool // resolveExit ran once
}

type dataPlaneConfig struct {
	Stack             *tunnel.Stack // sends through Device's current WireGuard
	NodeKey, DiscoKey key.Private
	Port              int
	Logger            *slog.Logger
	OnEndpoints       func([]magicsock.Endpoint)
	OnHomeDERP        func(int)
	ShieldsUp         bool
	Routes            routePolicy
	Served            []netip.Prefix   // networks the node forwards to, for the filter
	Burst             magicsock.Corker // the TUN device, or nil (magicsock.Options.Burst)

	// For tests: a DERP in place of the real relay client, and a load
	// signal in place of WireGuard's own.
	derp      magicsock.DERP
	underLoad func() bool
}

func newDataPlane(c dataPlaneConfig) (*dataPlane, error) {
	d := &dataPlane{logger: c.Logger, stack: c.Stack, onEndpoints: c.OnEndpoints, onHomeDERP: c.OnHomeDERP, shieldsUp: c.ShieldsUp,
		policy: c.Routes, served: c.Served}
	var err error
	d.wg, err = wireguard.NewDevice(wireguard.Config{
		PrivateKey: c.NodeKey,
		Send:       func(peer key.NodePublic, msg []byte) error { return d.ms.Send(peer, msg) },
		Deliver:    d.stack.Inbound,
		// Under a flood of handshakes, answer each sender with a cookie,
		// the way its message came.
		SendCookieReply: d.sendCookieReply,
		HostOf:          hostOf,
		Logger:          c.Logger.With("component", "wireguard"),
		UnderLoad:       c.underLoad,
	})
	if err != nil {
		return nil, err
	}
	port := c.Port
	if port < 0 {
		port = 0
	}
	d.ms, err = magicsock.New(magicsock.Options{
		DiscoKey:             c.DiscoKey,
		NodeKey:              c.NodeKey,
		Port:                 uint16(port),
		ReceiveWireGuard:     d.receiveWireGuard,
		ReceiveWireGuardDERP: d.receiveWireGuardDERP,
		NewReceiveBatch:      func() magicsock.ReceiveBatch { return &udpBatch{b: d.wg.NewRxBatch()} },
		// A peer that made a session with this node before control told
		// it of our start (and so of our new disco key) resets that
		// session when the news arrives, as tailscaled does, and says
		// nothing: its first disco message proves the news came, and a
		// new handshake then replaces a session it may have dropped.
		OnPeerHeard: func(k key.NodePublic) { d.wg.Rekey(k) },
		OnEndpoints: func(eps []magicsock.Endpoint) {
			if d.onEndpoints != nil {
				d.onEndpoints(eps)
			}
		},
		OnHomeDERP: func(r int) {
			if d.onHomeDERP != nil {
				d.onHomeDERP(r)
			}
		},
		Burst:  c.Burst,
		DERP:   c.derp,
		Logger: c.Logger.With("component", "magicsock"),
	})
	if err != nil {
		d.wg.Close()
		return nil, err
	}
	return d, nil
}

// WireGuard's cookies are bound to the bytes that identify a message's
// sender to the transport. A UDP sender is its address and port; a DERP
// sender, whose packets all come from the same relay, is the region and
// its node key, so that each peer behind a relay gets a cookie of its own
// and its reply goes back through the relay.
const (
	srcUDP  = 1 // srcUDP, 16-byte address, 2-byte port
	srcDERP = 2 // srcDERP, 2-byte region, 32-byte node key

	srcUDPLen  = 1 + 16 + 2
	srcDERPLen = 1 + 2 + 32
)

// receiveWireGuard hands a WireGuard message that arrived over UDP to the
// core, with its source packed into a fixed array.
func (d *dataPlane) receiveWireGuard(msg []byte, src netip.AddrPort) {
	var b [srcUDPLen]byte
	packUDPSource(&b, src)
	d.wg.ReceiveFrom(msg, b[:])
}

func packUDPSource(b *[srcUDPLen]byte, src netip.AddrPort) {
	b[0] = srcUDP
	a16 := src.Addr().As16()
	copy(b[1:17], a16[:])
	binary.BigEndian.PutUint16(b[17:], src.Port())
}

// udpBatch is receiveWireGuard for the messages of a UDP read loop:
// WireGuard handles those of one read with one reading of the clock.
type udpBatch struct{ b *wireguard.RxBatch }

func (u *udpBatch) Add(msg []byte, src netip.AddrPort) {
	var b [srcUDPLen]byte
	packUDPSource(&b, src)
	u.b.Add(msg, b[:])
}

func (u *udpBatch) Flush() { u.b.Flush() }

// receiveWireGuardDERP is receiveWireGuard for a message relayed by DERP.
func (d *dataPlane) receiveWireGuardDERP(msg []byte, region int, from key.NodePublic) {
	var b [srcDERPLen]byte
	b[0] = srcDERP
	binary.BigEndian.PutUint16(b[1:3], uint16(region))
	copy(b[3:], from[:])
	d.wg.ReceiveFrom(msg, b[:])
}

// hostOf is the sending host of a packed source, for WireGuard's
// handshake rate limit: a UDP sender's address without its port, and a
// DERP sender's region and node key.
func hostOf(src []byte) []byte {
	if len(src) == srcUDPLen && src[0] == srcUDP {
		return src[:1+16]
	}
	return src
}

// sendCookieReply sends msg back to src, as packed by receiveWireGuard or
// receiveWireGuardDERP.
func (d *dataPlane) sendCookieReply(src, msg []byte) error {
	switch {
	case len(src) == srcUDPLen && src[0] == srcUDP:
		addr := netip.AddrFrom16([16]byte(src[1:17])).Unmap()
		return d.ms.WriteUDP(msg, netip.AddrPortFrom(addr, binary.BigEndian.Uint16(src[17:])))
	case len(src) == srcDERPLen && src[0] == srcDERP:
		return d.ms.WriteDERP(msg, int(binary.BigEndian.Uint16(src[1:3])), key.NodePublic(src[3:]))
	}
	return errors.New("microlink: cookie reply to an unknown source")
}

// apply pushes what changed in the netmap into the layers.
func (d *dataPlane) apply(nm *netmap.Map, ch netmap.Changes) {
	if ch.SelfChanged {
		if self, ok := nm.Self(); ok {
			d.stack.SetAddresses(self.Addresses)
			ch.FilterChanged = true // the filter's local addresses changed
		}
	}
	if ch.DERPMapChanged {
		if m := nm.DERPMap(); m != nil {
			d.ms.SetDERPMap(m)
		}
	}
	// The filter goes in before the peers it is for, so that no packet
	// from a new peer meets the rules of the netmap before.
	if ch.FilterChanged {
		d.setFilter(nm)
	}
	switch {
	case ch.Full:
		d.setPeers(nm)
	case ch.PathsChanged:
		d.updatePeers(nm, ch.PathsUpdated, ch.KeysGone)
	default:
		return
	}
	if d.peersApplied != nil {
		d.peersApplied()
	}
}

func (d *dataPlane) setPeers(nm *netmap.Map) {
	var wgPeers []wireguard.PeerConfig
	var msPeers []magicsock.Peer
	now := nm.Now()
	exit, _ := d.resolveExit(nm)
	nm.ForEachPeer(func(p *netmap.Peer) bool {
		expired := p.ExpiredAt(now)
		msPeers = append(msPeers, magicsock.Peer{
			Key: p.Key, DiscoKey: p.DiscoKey, Endpoints: p.Endpoints, HomeDERP: p.HomeDERP, Expired: expired,
		})
		if !expired {
			wgPeers = append(wgPeers, wireguard.PeerConfig{Key: p.Key, AllowedIPs: d.policy.allowedIPs(p, p.Key == exit)})
		}
		return true
	})
	restarted := d.ms.SetPeers(msPeers)
	d.wg.SetPeers(wgPeers)
	d.peersRestarted(restarted)
}

// peersRestarted tells WireGuard of peers whose disco key changed: they
// restarted and lost their sessions with this node, as tailscaled reads
// it too. Our packets then wait for a new handshake instead of going into
// a session the peer no longer has.
func (d *dataPlane) peersRestarted(keys []key.NodePublic) {
	for _, k := range keys {
		d.logger.Debug("microlink: peer restarted", "peer", k.ShortString())
		d.wg.PeerRestarted(k)
	}
}

// updatePeers passes on the peers a delta changed, so that its cost does
// not grow with the size of the tailnet.
func (d *dataPlane) updatePeers(nm *netmap.Map, ids []tailcfg.NodeID, gone []key.NodePublic) {
	exit, changed := d.resolveExit(nm)
	if changed {
		// Both the old and the new exit node change their routes.
		d.setPeers(nm)
		return
	}
	now := nm.Now()
	msPeers := make([]magicsock.Peer, 0, len(ids))
	var wgPeers []wireguard.PeerConfig
	wgGone := slices.Clip(gone) // expired peers leave WireGuard only
	for _, id := range ids {
		p, ok := nm.PeerByID(id)
		if !ok {
			continue
		}
		expired := p.ExpiredAt(now)
		msPeers = append(msPeers, magicsock.Peer{
			Key: p.Key, DiscoKey: p.DiscoKey, Endpoints: p.Endpoints, HomeDERP: p.HomeDERP, Expired: expired,
		})
		if expired {
			wgGone = append(wgGone, p.Key)
		} else {
			wgPeers = append(wgPeers, wireguard.PeerConfig{Key: p.Key, AllowedIPs: d.policy.allowedIPs(&p, p.Key == exit)})
		}
	}
	restarted := d.ms.UpdatePeers(msPeers, gone)
	d.wg.UpdatePeers(wgPeers, wgGone)
	d.peersRestarted(restarted)
}

// resolveExit finds the configured exit node in nm and records it as the
// one in use. It returns its key (zero if none) and whether that changed.
func (d *dataPlane) resolveExit(nm *netmap.Map) (key.NodePublic, bool) {
	var k key.NodePublic
	p, ok := d.policy.exitPeer(nm)
	if ok && !p.ExpiredAt(nm.Now()) {
		k = p.Key
	}
	d.exitMu.Lock()
	changed := d.exit != k
	first := !d.exitSeen
	d.exit, d.exitSeen = k, true
	d.exitMu.Unlock()
	switch {
	case !(changed || first) || d.policy.exitNode == "":
	case k.IsZero():
		d.logger.Warn("microlink: the exit node is not in the tailnet; traffic outside the tailnet is dropped", "exitnode", d.policy.exitNode)
	case !offersExit(&p):
		d.logger.Warn("microlink: the exit node does not offer exit routes (or control has not approved them); traffic outside the tailnet is dropped", "exitnode", p.ShortName())
	default:
		d.logger.Info("microlink: exit node in use", "exitnode", p.ShortName(), "key", k.ShortString())
	}
	return k, changed
}

// exitNode returns the key of the exit node in use, or zero.
func (d *dataPlane) exitNode() key.NodePublic {
	d.exitMu.Lock()
	defer d.exitMu.Unlock()
	return d.exit
}

// setFilter builds the inbound packet filter from the netmap's rules. No
// rules at all let in only replies to traffic this node started.
func (d *dataPlane) setFilter(nm *netmap.Map) {
	rules := nm.FilterRules()
	if d.shieldsUp {
		rules = nil
	}
	self, _ := nm.Self()
	local := self.Addresses
	if len(d.served) > 0 {
		local = append(slices.Clip(local), d.served...)
	}
	d.stack.SetFilter(packet.NewFilterFrom(d.stack.Filter(), convertRules(d.logger, rules), local))
}

func convertRules(logger *slog.Logger, rules []tailcfg.FilterRule) []packet.Rule {
	out := make([]packet.Rule, 0, len(rules))
	for _, r := range rules {
		dsts := make([]packet.Dst, 0, len(r.DstPorts))
		for _, d := range r.DstPorts {
			dsts = append(dsts, packet.Dst{IP: d.IP, First: d.Ports.First, Last: d.Ports.Last})
		}
		pr, err := packet.ParseRule(r.SrcIPs, dsts, r.IPProto)
		if err != nil {
			logger.Warn("microlink: skipping packet filter rule", "err", err)
			continue
		}
		out = append(out, pr)
	}
	return out
}

// close stops WireGuard and magicsock; the stack is the node's to close.
func (d *dataPlane) close() {
	d.ms.Close()
	d.wg.Close()
}

// fullChanges is a Changes that makes apply push everything.
func fullChanges() netmap.Changes {
	return netmap.Changes{Full: true, SelfChanged: true, DERPMapChanged: true, FilterChanged: true}
}
