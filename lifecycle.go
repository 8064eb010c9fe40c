package microlink

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/microlink-go/microlink/internal/control"
	"github.com/microlink-go/microlink/internal/key"
	"github.com/microlink-go/microlink/internal/magicsock"
	"github.com/microlink-go/microlink/internal/netmap"
	"github.com/microlink-go/microlink/internal/packet"
	"github.com/microlink-go/microlink/internal/router"
	"github.com/microlink-go/microlink/internal/state"
	"github.com/microlink-go/microlink/internal/tailcfg"
	"github.com/microlink-go/microlink/internal/tcp"
	"github.com/microlink-go/microlink/internal/tlsroots"
	"github.com/microlink-go/microlink/internal/tunnel"
)

// Start connects the node: it opens the UDP socket, logs in to the control
// server (unless the identity in the state directory is logged in already)
// and waits for the first network map. It returns nil once the node is
// Connected, a *RegistrationError if control refuses the node's first login
// (a bad auth key, for example), or ctx's error if ctx ends first; in that
// last case the node goes on connecting in the background, and WaitState or
// Watch tell when it is Connected. Call Close when done, whatever Start
// returned.
//
// Once the node has logged in or received a netmap, it never gives up:
// every control failure is retried with backoff, and Status().Err says
// what went wrong last. The node logs in again only when its key expires
// or control no longer knows it, with the auth key if it has one, and
// otherwise waits in NeedsLogin with the login URL.
//
// While waiting for an interactive login or an administrator's approval,
// Start keeps waiting; watch for NeedsLogin with Watch and show the URL.
func (n *Node) Start(ctx context.Context) error {
	n.mu.Lock()
	switch {
	case n.closed:
		n.mu.Unlock()
		return ErrClosed
	case n.started:
		n.mu.Unlock()
		return errors.New("microlink: Start called twice")
	}
	n.started = true
	n.mu.Unlock()

	n.recoverHostDNS()
	if strings.HasPrefix(strings.ToLower(n.cfg.ControlURL), "https:") {
		tlsroots.Pool(n.logger) // decides, and logs, which roots verify control
	}
	n.disco = key.NewPrivate()
	n.stack = tunnel.New(tunnel.Config{
		Output: func(pkt []byte) error {
			d := n.current.Load()
			if d == nil {
				return ErrClosed
			}
			return d.wg.SendPacket(pkt)
		},
		// The segments TCP sends at once leave in one system call.
		Batch:  func() tcp.Corker { return n.corker() },
		TCP:    n.cfg.TCP.stackConfig(),
		Logger: n.logger,
	})
	if n.cfg.TUN != "" {
		// Before the node's sockets open: they must carry the mark.
		t, err := startTUN(n.cfg, n.stack, n.dns, n.corker, n.logger)
		if err != nil {
			n.stack.Close()
			return fmt.Errorf("microlink: %w", err)
		}
		n.mu.Lock()
		n.tun = t
		n.mu.Unlock()
	} else if len(n.cfg.AdvertiseRoutes) > 0 {
		// A subnet router (or exit node) in userspace mode relays
		// through the host's own sockets.
		n.relay = router.NewRelay(router.RelayConfig{Stack: n.stack, Logger: n.logger.With("component", "router")})
		n.stack.SetForwarder(&tunnel.Forwarder{Deliver: n.relay.Deliver})
	}
	data, err := n.newDataPlane(n.ident.NodeKey)
	if err != nil {
		n.closeRelay()
		n.stack.Close()
		n.closeTUN()
		return publicErr(fmt.Errorf("microlink: %w", err))
	}
	n.restorePeerCache(data)

	ctl, err := control.New(control.Options{
		ServerURL:     n.cfg.ControlURL,
		MachineKey:    n.ident.MachineKey,
		NodeKey:       n.ident.NodeKey,
		AuthKey:       n.cfg.AuthKey,
		Registered:    !n.identNew, // a stored identity was logged in before
		Hostinfo:      n.hostinfo(),
		Ephemeral:     n.cfg.Ephemeral,
		Logger:        n.logger.With("component", "control"),
		OnState:       n.onControlState,
		OnNodeKey:     n.onNodeKey,
		OnNewStream:   n.markNewStream,
		OnMapResponse: n.onMapMessage,
		OnReported:    n.onReported,
		Pinger:        controlPinger{n},
	})
	if err != nil {
		data.close()
		n.closeRelay()
		n.stack.Close()
		n.closeTUN()
		return publicErr(fmt.Errorf("microlink: %w", err))
	}
	ctl.SetDiscoKey(n.disco.DiscoPublic())

	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	runErr := make(chan error, 1)
	mon := n.watchNetwork()
	n.mu.Lock()
	n.data, n.ctl, n.cancel, n.done, n.netmon = data, ctl, cancel, done, mon
	n.mu.Unlock()
	// What the data plane learned before the control client existed (a
	// home region from the peer cache's DERP map) goes into the first
	// lite update; later changes come through the callbacks.
	ctl.SetPreferredDERP(data.ms.HomeDERP())
	ctl.SetEndpoints(controlEndpoints(data.ms.Endpoints()))
	n.setState(Connecting, "", nil)
	go func() {
		defer close(done)
		runErr <- ctl.Run(runCtx)
	}()

	for {
		n.mu.Lock()
		st, ch, closed := n.st, n.changed, n.closed
		n.mu.Unlock()
		if closed {
			return ErrClosed
		}
		if st == Connected {
			return nil
		}
		select {
		case <-ch:
		case err := <-runErr:
			if errors.Is(err, control.ErrClosed) {
				return ErrClosed
			}
			var re *control.RegisterError
			if errors.As(err, &re) {
				return &RegistrationError{Reason: re.Msg}
			}
			return publicErr(fmt.Errorf("microlink: %w", err))
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Close disconnects the node and stops every goroutine it started. The
// identity stays in the state directory.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	ctl, data, cancel, done, mon := n.ctl, n.data, n.cancel, n.done, n.netmon
	if n.graceTimer != nil {
		n.graceTimer.Stop()
	}
	if n.cacheTimer != nil {
		n.cacheTimer.Stop()
		n.cacheTimer = nil
	}
	if n.expiryTimer != nil {
		n.expiryTimer.Stop()
		n.expiryTimer = nil
	}
	if n.keyWarnTimer != nil {
		n.keyWarnTimer.Stop()
		n.keyWarnTimer = nil
	}
	n.mu.Unlock()
	if mon != nil {
		mon.Close()
	}
	if cancel != nil {
		cancel()
	}
	if ctl != nil {
		ctl.Close()
	}
	if done != nil {
		<-done
	}
	n.dnsStop()
	n.dnsConns.Wait()
	n.current.Store(nil)
	if data != nil {
		data.close()
	}
	n.closeRelay()
	if n.stack != nil {
		n.stack.Close()
	}
	n.closeTUN()
	n.savePeerCache()
	n.setState(Stopped, "", nil)
	n.events.close(Event{State: Stopped}) // if the state was Stopped already
	return nil
}

// Logout expires the node's key on the control server, removes the
// identity from the state directory and stops the node.
func (n *Node) Logout(ctx context.Context) error {
	n.mu.Lock()
	ctl := n.ctl
	n.mu.Unlock()
	if ctl == nil {
		return ErrNotConnected
	}
	if err := ctl.Logout(ctx); err != nil {
		return publicErr(fmt.Errorf("microlink: logout: %w", err))
	}
	n.Close()
	if n.store != nil {
		if err := n.store.Remove(); err != nil {
			return publicErr(fmt.Errorf("microlink: logout: %w", err))
		}
	}
	return nil
}

// newDataPlane starts WireGuard and magicsock for nodeKey and makes them
// the stack's way out.
func (n *Node) newDataPlane(nodeKey key.Private) (*dataPlane, error) {
	d, err := newDataPlane(dataPlaneConfig{
		Stack:     n.stack,
		NodeKey:   nodeKey,
		DiscoKey:  n.disco,
		Port:      n.cfg.Port,
		Logger:    n.logger,
		ShieldsUp: n.cfg.ShieldsUp,
		Routes:    routePolicy{acceptRoutes: n.cfg.AcceptRoutes, exitNode: n.cfg.ExitNode},
		Served:    n.servedNets(),
		OnEndpoints: func(eps []magicsock.Endpoint) {
			if ctl := n.control(); ctl != nil {
				ctl.SetEndpoints(controlEndpoints(eps))
			}
		},
		OnHomeDERP: n.onHomeDERP,
		Burst:      n.tunBurst(),
	})
	if err == nil {
		n.current.Store(d)
	}
	return d, err
}

func controlEndpoints(eps []magicsock.Endpoint) []control.Endpoint {
	out := make([]control.Endpoint, len(eps))
	for i, e := range eps {
		out[i] = control.Endpoint{AddrPort: e.AddrPort, Type: e.Type}
	}
	return out
}

func (n *Node) control() *control.Client {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ctl
}

// onHomeDERP is called when the connection to a new home DERP region is
// up: control is told, and the node may now be reachable.
func (n *Node) onHomeDERP(region int) {
	if ctl := n.control(); ctl != nil {
		ctl.SetPreferredDERP(region)
	}
	n.mu.Lock()
	n.homeUp = region
	n.mu.Unlock()
	n.updateConnected()
}

// reachableGrace bounds how long a node that has its netmap waits for
// control to learn its home DERP region before it counts as Connected
// anyway (for example when no relay can be reached at all).
const reachableGrace = 3 * time.Second

// onControlState maps the control client's state onto the node's.
func (n *Node) onControlState(s control.State) {
	n.mu.Lock()
	n.ctlKind = s.Kind
	n.mu.Unlock()
	switch s.Kind {
	case control.NeedsLogin:
		n.setState(NeedsLogin, s.AuthURL, nil)
		if n.cfg.OnAuthURL != nil {
			n.cfg.OnAuthURL(s.AuthURL)
		} else {
			n.logger.Warn("microlink: to authorize this node, visit the login URL", "url", s.AuthURL)
		}
	case control.NeedsMachineAuth:
		n.setState(NeedsApproval, "", nil)
	case control.Connected:
		n.updateConnected()
	case control.Error:
		n.markNewStream()
		n.setState(Connecting, "", s.Err)
	default:
		n.markNewStream()
		n.setState(Connecting, "", nil)
	}
}

func (n *Node) markNewStream() {
	n.mu.Lock()
	n.newStream = true
	n.mu.Unlock()
}

// onMapMessage applies one map message to the netmap and the data plane.
func (n *Node) onMapMessage(resp *netmap.Message) {
	n.mu.Lock()
	fresh := n.newStream || !n.gotMap
	n.newStream, n.gotMap = false, true
	data := n.data
	n.mu.Unlock()
	if fresh {
		n.nm.StartStream()
	}
	ch, err := n.nm.Apply(resp)
	if err != nil {
		n.logger.Warn("microlink: bad map response", "err", err)
		return
	}
	n.mapUpdates.Add(1)
	if data != nil {
		data.apply(n.nm, ch)
		if ch.Full || ch.PathsChanged || ch.SelfChanged {
			n.updateHost(data)
		}
	}
	if ch.Full || ch.PathsChanged {
		n.armExpiryTimer()
	}
	if ch.Full || ch.SelfChanged || ch.DNSChanged || ch.DomainChanged {
		n.updateDNS()
	}
	if ch.Full || len(ch.PeersAdded) > 0 || len(ch.PeersRemoved) > 0 || ch.DERPMapChanged {
		n.schedulePeerCacheSave()
	}
	if resp.Node != nil || ch.DERPMapChanged {
		n.updateConnected()
	}
	if resp.Node != nil {
		n.checkKeyExpiry()
	}
	if ch.PeersTouched() {
		n.notifyPeers()
	}
}

// onReported records what control now knows of the node's home region.
func (n *Node) onReported(homeDERP, endpoints int) {
	n.mu.Lock()
	n.reportedDERP = homeDERP
	n.mu.Unlock()
	n.updateConnected()
}

// updateConnected moves the node to Connected once it is reachable: control
// streams the netmap, the device is authorized, and control knows the home
// DERP region through which peers reach it first (unless there are no
// relays, or the grace period for finding one is over). Control knows it
// when it accepted a lite update with it, or, without waiting for one, when
// the self node it sends already names the region whose connection is up,
// as after a restart.
func (n *Node) updateConnected() {
	self, ok := n.nm.Self()
	n.mu.Lock()
	if n.ctlKind != control.Connected || !ok {
		n.mu.Unlock()
		return
	}
	if !self.MachineAuthorized {
		n.mu.Unlock()
		n.setState(NeedsApproval, "", nil)
		return
	}
	known := n.reportedDERP != 0 || (n.homeUp != 0 && self.HomeDERP == n.homeUp)
	ready := known || n.graceOver || !hasRegions(n.nm.DERPMap())
	if !ready && n.graceTimer == nil && !n.closed {
		n.graceTimer = time.AfterFunc(reachableGrace, func() {
			n.mu.Lock()
			n.graceOver = true
			n.mu.Unlock()
			n.updateConnected()
		})
	}
	n.mu.Unlock()
	if ready {
		n.setState(Connected, "", nil)
	}
}

func hasRegions(m *tailcfg.DERPMap) bool { return m != nil && len(m.Regions) > 0 }

// onNodeKey persists a new node key (after expiry or rotation) and moves
// the data plane to it.
func (n *Node) onNodeKey(k key.Private) {
	n.mu.Lock()
	if n.ident.NodeKey.Equal(k) {
		n.mu.Unlock()
		return
	}
	n.ident.OldNodeKey, n.ident.NodeKey = n.ident.NodeKey, k
	ident := *n.ident
	old := n.data
	n.newStream = true
	n.homeUp = 0 // the new data plane connects afresh
	n.mu.Unlock()
	if n.store != nil {
		if err := n.store.SaveIdentity(&ident); err != nil {
			n.logger.Error("microlink: saving the new node key", "err", err)
		}
	}
	if old == nil {
		return
	}
	// The UDP port is released by the old magicsock before the new one
	// binds it; the stack and its sockets stay.
	old.close()
	data, err := n.newDataPlane(k)
	if err != nil {
		n.logger.Error("microlink: restarting the data plane with the new node key", "err", err)
		return
	}
	n.mu.Lock()
	n.retired.addDataPlane(old.wg.Stats(), old.ms.Counters())
	n.data = data
	n.mu.Unlock()
	data.apply(n.nm, fullChanges())
	n.updateHost(data)
	n.logger.Info("microlink: node key rotated", "nodekey", k.NodePublic().ShortString())
}

// updateHost moves the host's routes (TUN mode) to what the netmap and
// the routing policy of data call for.
func (n *Node) updateHost(data *dataPlane) {
	n.mu.Lock()
	t := n.tun
	n.mu.Unlock()
	if t != nil {
		t.update(n.nm, data.policy, data.exitNode())
	}
}

// closeRelay stops the userspace subnet router, if any.
func (n *Node) closeRelay() {
	if n.relay != nil {
		n.stack.SetForwarder(nil)
		n.relay.Close()
	}
}

// closeTUN removes the TUN device and the host routing, if any.
func (n *Node) closeTUN() {
	n.mu.Lock()
	t := n.tun
	n.tun = nil
	n.mu.Unlock()
	if t != nil {
		t.close()
	}
}

// armExpiryTimer arranges for the data plane to drop peers when their keys
// expire, which happens without any message from control.
func (n *Node) armExpiryTimer() {
	next := n.nm.NextPeerExpiry()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.expiryTimer != nil {
		n.expiryTimer.Stop()
		n.expiryTimer = nil
	}
	if next.IsZero() || n.closed {
		return
	}
	n.expiryTimer = time.AfterFunc(next.Sub(n.nm.Now()), func() {
		n.mu.Lock()
		data, closed := n.data, n.closed
		n.mu.Unlock()
		if closed || data == nil {
			return
		}
		n.logger.Info("microlink: a peer's key expired")
		data.setPeers(n.nm)
		n.updateHost(data)
		n.notifyPeers()
		n.armExpiryTimer()
	})
}

// restorePeerCache seeds the netmap with the peers known from the last run,
// so that traffic to them can start before control answers.
func (n *Node) restorePeerCache(data *dataPlane) {
	if n.store == nil {
		return
	}
	pc := n.store.LoadPeers()
	if pc == nil {
		return
	}
	ch := n.nm.Restore(pc.NetmapPeers(), pc.DERPMap)
	if len(pc.Self) > 0 {
		// Until control sends the netmap and its packet filter, use the
		// cached addresses and let in only replies to what we send.
		data.stack.SetAddresses(pc.Self)
		data.stack.SetFilter(packet.NewFilter(nil, pc.Self))
	}
	data.apply(n.nm, ch)
	n.logger.Info("microlink: restored known peers", "peers", n.nm.NumPeers())
}

// peerCacheDelay bounds how often the peer cache is written: a busy
// tailnet changes its membership often, and each save writes every peer.
const peerCacheDelay = 30 * time.Second

// schedulePeerCacheSave saves the peer cache in a while, once for all the
// changes until then. Close saves it too.
func (n *Node) schedulePeerCacheSave() {
	if n.store == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cacheTimer != nil || n.closed {
		return
	}
	n.cacheTimer = time.AfterFunc(peerCacheDelay, func() {
		n.mu.Lock()
		n.cacheTimer = nil
		closed := n.closed
		n.mu.Unlock()
		if !closed {
			n.savePeerCache()
		}
	})
}

func (n *Node) savePeerCache() {
	if n.store == nil {
		return
	}
	self, ok := n.nm.Self()
	if !ok {
		return
	}
	pc := state.NewPeerCache(n.nm.Peers(), n.nm.DERPMap(), time.Now())
	pc.Self = self.Addresses
	if err := n.store.SavePeers(pc); err != nil {
		n.logger.Warn("microlink: saving the peer cache", "err", err)
	}
}

// controlPinger runs the pings control asks for.
type controlPinger struct{ n *Node }

func (p controlPinger) Ping(ctx context.Context, ip netip.Addr, typ string) (*tailcfg.PingResponse, error) {
	var t PingType
	switch typ {
	case "disco":
		t = PingDisco
	case "TSMP":
		t = PingTSMP
	case "ICMP":
		t = PingICMP
	default:
		return nil, fmt.Errorf("microlink: unsupported ping type %q", typ)
	}
	res, err := p.n.Ping(ctx, ip.String(), t)
	out := &tailcfg.PingResponse{Type: typ, IP: ip.String(), NodeIP: ip.String(), NodeName: res.Peer}
	if err != nil {
		out.Err = err.Error()
		return out, nil
	}
	out.LatencySeconds = res.Latency.Seconds()
	out.DERPRegionID = res.DERPRegion
	if res.Endpoint.IsValid() {
		out.Endpoint = res.Endpoint.String()
	}
	return out, nil
}

// corker returns the current magicsock, for the TUN reader and the TCP
// stack to batch their sends with, or nil.
func (n *Node) corker() magicsock.Corker {
	if d := n.current.Load(); d != nil {
		return d.ms
	}
	return nil
}

// tunBurst returns the TUN device, which the data plane corks around the
// packets of each read from its socket, or nil in userspace mode.
func (n *Node) tunBurst() magicsock.Corker {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.tun == nil {
		return nil
	}
	return n.tun.dev
}
