package microlink

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/microlink-go/microlink/internal/magicsock"
	"github.com/microlink-go/microlink/internal/netmap"
	"github.com/microlink-go/microlink/internal/tunnel"
	"github.com/microlink-go/microlink/internal/wireguard"
)

// Status is a snapshot of the node itself.
type Status struct {
	State     State
	AuthURL   string // set while State is NeedsLogin
	Hostname  string
	FQDN      string // MagicDNS name without the trailing dot
	Addresses []netip.Addr
	NodeKey   string // "nodekey:…"
	HomeDERP  int    // home DERP region, 0 if none yet
	// Err is the last control error while the node is retrying: it stays
	// until the node is connected again.
	Err error
	// KeyExpiry is when the node key expires, in the control server's
	// clock; zero means never, or not known yet.
	KeyExpiry time.Time
	// Health lists problems to show the user: the control server's health
	// and display messages for the node, and a warning from 7 days before
	// the node key expires. Empty means none.
	Health []string

	// TUN is the TUN device in TUN mode, "" in userspace mode.
	TUN string
	// AdvertisedRoutes are the routes the node offers
	// (Config.AdvertiseRoutes); ApprovedRoutes are those control has
	// approved for it to serve.
	AdvertisedRoutes, ApprovedRoutes []netip.Prefix
	// ExitNode is the short name of the exit node in use, "" if none;
	// ExitNodeIP is its address.
	ExitNode   string
	ExitNodeIP netip.Addr
}

// Status returns a snapshot of the node itself.
func (n *Node) Status() Status {
	n.mu.Lock()
	st := Status{State: n.st, AuthURL: n.authURL, Err: publicErr(n.lastErr), Hostname: n.cfg.Hostname}
	st.NodeKey = n.ident.NodeKey.NodePublic().String()
	data := n.data
	n.mu.Unlock()
	if self, ok := n.nm.Self(); ok {
		st.FQDN = strings.TrimSuffix(self.Name, ".")
		for _, p := range self.Addresses {
			st.Addresses = append(st.Addresses, p.Addr())
		}
	}
	st.TUN = n.cfg.TUN
	st.AdvertisedRoutes = n.cfg.AdvertiseRoutes
	if self, ok := n.nm.Self(); ok {
		st.ApprovedRoutes = self.Routes
	}
	if data != nil {
		st.HomeDERP = data.ms.HomeDERP()
		if k := data.exitNode(); !k.IsZero() {
			if p, ok := n.nm.PeerByKey(k); ok {
				st.ExitNode, st.ExitNodeIP = p.ShortName(), pickAddr(p, "")
			}
		}
	}
	st.KeyExpiry = n.nm.SelfKeyExpiry()
	st.Health = n.health()
	return st
}

// Peers returns the other nodes of the tailnet, sorted by name.
func (n *Node) Peers() []Peer {
	n.mu.Lock()
	data := n.data
	n.mu.Unlock()
	now := n.nm.Now()
	var ps []*Peer
	n.nm.ForEachPeer(func(p *netmap.Peer) bool {
		info := n.peerInfo(data, p, now)
		ps = append(ps, &info)
		return true
	})
	// Sorting pointers shares the code of the package's other sorts,
	// where sorting the structs would instantiate sorts of their own.
	slices.SortStableFunc(ps, func(a, b *Peer) int { return strings.Compare(a.Name, b.Name) })
	out := make([]Peer, len(ps))
	for i, p := range ps {
		out[i] = *p
	}
	return out
}

// Peer returns the peer named name (as Resolve understands names) or with
// tailnet address name.
func (n *Node) Peer(name string) (Peer, bool) {
	p, ok := n.lookupPeer(name)
	if !ok {
		return Peer{}, false
	}
	n.mu.Lock()
	data := n.data
	n.mu.Unlock()
	return n.peerInfo(data, &p, n.nm.Now()), true
}

func (n *Node) lookupPeer(name string) (netmap.Peer, bool) {
	if ip, err := netip.ParseAddr(name); err == nil {
		return n.nm.PeerByIP(ip.Unmap())
	}
	addrs, ok := n.nm.Resolve(name)
	if !ok || len(addrs) == 0 {
		return netmap.Peer{}, false
	}
	return n.nm.PeerByIP(addrs[0])
}

func (n *Node) peerInfo(data *dataPlane, p *netmap.Peer, now time.Time) Peer {
	out := Peer{
		Name:     p.ShortName(),
		FQDN:     strings.TrimSuffix(p.Name, "."),
		Hostname: p.Hostname,
		StableID: p.StableID,
		UserID:   int64(p.User),
		Tags:     slices.Clone(p.Tags),
		OS:       p.OS,
		Online:   p.Online,
		Expired:  p.ExpiredAt(now),
		LastSeen: p.LastSeen,
		NodeKey:  p.Key.String(),
		HomeDERP: p.HomeDERP,
	}
	for _, a := range p.Addresses {
		out.Addresses = append(out.Addresses, a.Addr())
	}
	ipv4First(out.Addresses)
	out.Routes = peerRoutes(p)
	out.ExitNodeOption = offersExit(p)
	if data == nil {
		return out
	}
	exit := data.exitNode()
	out.ExitNode = !exit.IsZero() && exit == p.Key
	for _, r := range data.policy.allowedIPs(p, out.ExitNode) {
		if !ownRoute(p, r) {
			out.AcceptedRoutes = append(out.AcceptedRoutes, r)
		}
	}
	if st, ok := data.ms.PeerStatus(p.Key); ok {
		out.Latency = st.Latency
		switch {
		case st.Addr.IsValid() && st.Trusted:
			out.Path, out.Endpoint = "direct", st.Addr
		case st.DERPRegion != 0:
			out.Path, out.DERPRegion = "derp", st.DERPRegion
		}
	}
	if ws, ok := data.wg.PeerStats(p.Key); ok {
		out.RxBytes, out.TxBytes, out.LastHandshake = ws.RxBytes, ws.TxBytes, ws.LastHandshake
	}
	return out
}

// Resolve returns the tailnet addresses of a node by MagicDNS name: a short
// name ("laptop"), or a full name with or without its trailing dot. IPv4
// addresses come first.
func (n *Node) Resolve(name string) ([]netip.Addr, error) {
	addrs, ok := n.nm.Resolve(name)
	if !ok || len(addrs) == 0 {
		return nil, fmt.Errorf("microlink: no node named %q in the tailnet", name)
	}
	out := slices.Clone(addrs)
	ipv4First(out)
	return out, nil
}

// Ping pings the peer named target (a name Resolve understands, or a
// tailnet IP) and returns the answer. typ is one kind of ping, or several
// combined with |, which are sent at the same time: the first answer is
// returned, and its Type says which kind it was. Zero means PingDisco.
func (n *Node) Ping(ctx context.Context, target string, typ PingType) (PingResult, error) {
	if typ == 0 {
		typ = PingDisco
	}
	if typ&^pingAll != 0 {
		return PingResult{}, fmt.Errorf("microlink: unknown ping type %v", typ)
	}
	data, err := n.dataPlane()
	if err != nil {
		return PingResult{}, err
	}
	p, ok := n.lookupPeer(target)
	if !ok {
		return PingResult{}, fmt.Errorf("microlink: no peer %q in the tailnet", target)
	}
	if p.ExpiredAt(n.nm.Now()) {
		return PingResult{}, fmt.Errorf("microlink: peer %s: node key has expired", p.ShortName())
	}
	ip := pickAddr(p, target)
	var kinds []PingType
	for k := PingDisco; k <= PingICMP; k <<= 1 {
		if typ&k != 0 {
			kinds = append(kinds, k)
		}
	}
	if len(kinds) == 1 {
		res, err := ping(ctx, data, &p, ip, typ)
		return res, publicErr(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type answer struct {
		res PingResult
		err error
	}
	answers := make(chan answer, len(kinds))
	for _, k := range kinds {
		go func() {
			res, err := ping(ctx, data, &p, ip, k)
			answers <- answer{res, err}
		}()
	}
	var first *answer
	var errs []error
	for range kinds {
		a := <-answers
		switch {
		case a.err == nil && first == nil:
			first = &a
			cancel() // the others are not needed; wait for them to stop
		case a.err != nil:
			errs = append(errs, a.err)
		}
	}
	if first != nil {
		return first.res, nil
	}
	return PingResult{Type: typ, Peer: p.ShortName(), PeerIP: ip}, publicErr(errors.Join(errs...))
}

// ping sends one ping of kind k to peer p at ip.
func ping(ctx context.Context, data *dataPlane, p *netmap.Peer, ip netip.Addr, k PingType) (PingResult, error) {
	res := PingResult{Type: k, Peer: p.ShortName(), PeerIP: ip}
	var err error
	switch k {
	case PingDisco:
		r, err := data.ms.Ping(ctx, p.Key)
		if err != nil {
			return res, err
		}
		res.Latency, res.Endpoint, res.DERPRegion = r.Latency, r.Addr, r.DERPRegion
		return res, nil
	case PingTSMP:
		res.Latency, err = data.stack.PingTSMP(ctx, ip)
	case PingICMP:
		res.Latency, err = data.stack.PingICMP(ctx, ip)
	}
	if err != nil {
		return res, err
	}
	// The answer came through WireGuard: report the path it uses.
	if st, ok := data.ms.PeerStatus(p.Key); ok {
		if st.Addr.IsValid() && st.Trusted {
			res.Endpoint = st.Addr
		} else {
			res.DERPRegion = st.DERPRegion
		}
	}
	return res, nil
}

// ipv4First moves IPv4 addresses before IPv6 ones, keeping their order
// otherwise. A node has two or three addresses.
func ipv4First(addrs []netip.Addr) {
	for i := 1; i < len(addrs); i++ {
		for j := i; j > 0 && addrs[j].Is4() && !addrs[j-1].Is4(); j-- {
			addrs[j], addrs[j-1] = addrs[j-1], addrs[j]
		}
	}
}

// pickAddr returns the peer address target names, or the peer's first IPv4
// address (else its first address).
func pickAddr(p netmap.Peer, target string) netip.Addr {
	if ip, err := netip.ParseAddr(target); err == nil {
		return ip.Unmap()
	}
	for _, a := range p.Addresses {
		if a.Addr().Is4() {
			return a.Addr()
		}
	}
	if len(p.Addresses) > 0 {
		return p.Addresses[0].Addr()
	}
	return netip.Addr{}
}

func (n *Node) dataPlane() (*dataPlane, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, ErrClosed
	}
	if n.data == nil {
		return nil, ErrNotConnected
	}
	return n.data, nil
}

// hostDial connects to dst through the host's own IP stack, which in TUN
// mode routes tailnet addresses (and accepted routes, and with an exit
// node everything else) into the TUN device.
func hostDial(ctx context.Context, network string, dst netip.AddrPort) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, dst.String())
}

// sockets returns the data plane for the node's own sockets, which TUN
// mode leaves to the host's IP stack.
func (n *Node) sockets() (*dataPlane, error) {
	if n.cfg.TUN != "" {
		return nil, ErrTUNMode
	}
	return n.dataPlane()
}

// checkRoute returns an error wrapping ErrNoRoute if no peer routes dst
// for this node.
func (n *Node) checkRoute(dst netip.Addr) error {
	data, err := n.dataPlane()
	if err != nil {
		return err
	}
	return data.policy.routeTo(n.nm, data.exitNode(), dst)
}

// ListenUDP opens a UDP socket on port of the node's tailnet addresses
// (IPv4 and IPv6). Port 0 picks a free port; LocalAddr tells which. Peers
// reach it at IPv4():port. In TUN mode it returns ErrTUNMode, as ListenTCP
// does: the host's IP stack serves the node's addresses, and programs
// listen there with the net package; the dial methods (Dial, DialTCP,
// DialUDP, SendUDP) then connect through the host's IP stack too.
func (n *Node) ListenUDP(port uint16) (*UDPConn, error) {
	data, err := n.sockets()
	if err != nil {
		return nil, err
	}
	c, err := data.stack.ListenUDP(port)
	if err != nil {
		return nil, n.listenError("udp", port, err)
	}
	return &UDPConn{c: c}, nil
}

// listenError reports a failed Listen the way package net does.
func (n *Node) listenError(network string, port uint16, err error) error {
	var addr net.Addr = &net.UDPAddr{IP: n.IPv4().AsSlice(), Port: int(port)}
	if network == "tcp" {
		addr = &net.TCPAddr{IP: n.IPv4().AsSlice(), Port: int(port)}
	}
	if errors.Is(err, tunnel.ErrClosed) {
		err = net.ErrClosed
	}
	return publicErr(&net.OpError{Op: "listen", Net: network, Addr: addr, Err: err})
}

// DialUDP returns a socket that sends to and receives only from addr,
// "name:port" or "ip:port", from a free port. Its Read and Write need no
// address. An address that no peer routes for the node (outside the
// tailnet without an exit node, or behind a subnet router whose routes the
// node does not accept) is an error wrapping ErrNoRoute. Nothing is sent
// until the first Write, so ctx only bounds finding addr's peer: DialUDP
// fails if ctx is done.
func (n *Node) DialUDP(ctx context.Context, addr string) (net.Conn, error) {
	if _, err := n.dataPlane(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, &net.OpError{Op: "dial", Net: "udp", Err: err}
	}
	dst, err := n.resolveAddrPort(addr)
	if err != nil {
		return nil, err
	}
	if n.cfg.TUN != "" {
		return hostDial(ctx, "udp", dst)
	}
	if err := n.checkRoute(dst.Addr()); err != nil {
		return nil, err
	}
	c, err := n.ListenUDP(0)
	if err != nil {
		return nil, err
	}
	return &connectedUDP{u: c, remote: dst}, nil
}

// resolveAddrPort turns "name:port" or "ip:port" into an address and port.
func (n *Node) resolveAddrPort(addr string) (netip.AddrPort, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("microlink: %w", err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("microlink: bad port in %q", addr)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		addrs, rerr := n.Resolve(host)
		if rerr != nil {
			return netip.AddrPort{}, rerr
		}
		ip = addrs[0]
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(port)), nil
}

// ListenTCP listens for TCP connections to port on the node's tailnet
// addresses (IPv4 and IPv6). Port 0 picks a free port; the listener's Addr
// tells which. Peers reach it at IPv4():port if the
// tailnet's ACL lets them; connections to ports nobody listens on are
// refused with a reset.
func (n *Node) ListenTCP(port uint16) (net.Listener, error) {
	data, err := n.sockets()
	if err != nil {
		return nil, err
	}
	l, err := data.stack.ListenTCP(port)
	if err != nil {
		return nil, n.listenError("tcp", port, err)
	}
	return l, nil
}

// DialTCP opens a TCP connection to addr, "name:port" or "ip:port", and
// waits until it is established, refused, timed out or ctx is done. The
// connection supports deadlines and, through interfaces with the methods
// CloseWrite() error, SetKeepAlive(bool) error and
// SetKeepAlivePeriod(time.Duration) error, half-close and control of its
// keep-alive probes (on by default: after 60 s of silence from the peer).
// An address no peer routes for the node is an error wrapping ErrNoRoute,
// as for DialUDP.
func (n *Node) DialTCP(ctx context.Context, addr string) (net.Conn, error) {
	dst, err := n.resolveAddrPort(addr)
	if err != nil {
		return nil, err
	}
	data, err := n.dataPlane()
	if err != nil {
		return nil, err
	}
	if n.cfg.TUN != "" {
		return hostDial(ctx, "tcp", dst)
	}
	if err := n.checkRoute(dst.Addr()); err != nil {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(dst), Err: err}
	}
	c, err := data.stack.DialTCP(ctx, dst)
	if err != nil {
		if errors.Is(err, tunnel.ErrClosed) {
			err = net.ErrClosed
		}
		return nil, publicErr(&net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(dst), Err: err})
	}
	return c, nil
}

// SendUDP sends one datagram to addr ("name:port" or "ip:port") from an
// ephemeral port: the simplest way to send a reading to a collector. It
// fails with ctx's error if ctx is done before the datagram is sent.
func (n *Node) SendUDP(ctx context.Context, addr string, payload []byte) error {
	c, err := n.DialUDP(ctx, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetWriteDeadline(dl)
	}
	if _, err = c.Write(payload); err != nil && ctx.Err() != nil {
		return &net.OpError{Op: "write", Net: "udp", Addr: c.RemoteAddr(), Err: ctx.Err()}
	}
	return err
}

// Stats returns the node's counters.
func (n *Node) Stats() Stats {
	n.mu.Lock()
	data, st, ctl := n.data, n.retired, n.ctl
	n.mu.Unlock()
	st.Peers = n.nm.NumPeers()
	st.MapUpdates = n.mapUpdates.Load()
	if ctl != nil {
		st.RegisterRequests = ctl.RegisterRequests()
	}
	if data == nil {
		return st
	}
	st.addDataPlane(data.wg.Stats(), data.ms.Counters())
	dropped, _, _ := data.stack.Counters()
	ts := data.stack.TCPStats()
	st.Dropped += dropped + ts.Dropped
	st.TCPConns, st.TCPHalfOpen, st.TCPRetransmits, st.TCPSYNCookies = ts.Conns, ts.HalfOpen, ts.Retransmits, ts.SYNCookies
	return st
}

// addDataPlane adds the counters of one data plane (one node key) to st.
func (st *Stats) addDataPlane(ws wireguard.Stats, mc magicsock.Counters) {
	st.PacketsIn += ws.PacketsIn
	st.PacketsOut += ws.PacketsOut
	st.BytesIn += ws.BytesIn
	st.BytesOut += ws.BytesOut
	st.Handshakes += ws.HandshakesCompleted
	st.Dropped += ws.Drops
	st.DirectPacketsIn += mc.DirectPacketsIn
	st.DirectPacketsOut += mc.DirectPacketsOut
	st.DirectBytesIn += mc.DirectBytesIn
	st.DirectBytesOut += mc.DirectBytesOut
	st.DERPPacketsIn += mc.DERPPacketsIn
	st.DERPPacketsOut += mc.DERPPacketsOut
	st.DERPBytesIn += mc.DERPBytesIn
	st.DERPBytesOut += mc.DERPBytesOut
}

// Rebind reopens the node's UDP socket after a change of network (new
// address, new interface), probes STUN again and reports the new endpoints
// to control, without registering again or refetching the netmap.
func (n *Node) Rebind() error {
	data, err := n.dataPlane()
	if err != nil {
		return err
	}
	if ctl := n.control(); ctl != nil {
		ctl.Rebind()
	}
	return publicErr(data.ms.Rebind())
}

// DERPRegionCodes returns the short codes (such as "nyc") of the DERP
// map's regions, by region ID.
func (n *Node) DERPRegionCodes() map[int]string {
	dm := n.nm.DERPMap()
	if dm == nil {
		return nil
	}
	out := make(map[int]string, len(dm.Regions))
	for id, r := range dm.Regions {
		if r != nil {
			out[id] = r.RegionCode
		}
	}
	return out
}
