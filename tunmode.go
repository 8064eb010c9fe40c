package microlink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/microlink-go/microlink/internal/dns"
	"github.com/microlink-go/microlink/internal/key"
	"github.com/microlink-go/microlink/internal/magicsock"
	"github.com/microlink-go/microlink/internal/netmap"
	"github.com/microlink-go/microlink/internal/osdns"
	"github.com/microlink-go/microlink/internal/router"
	"github.com/microlink-go/microlink/internal/sockmark"
	"github.com/microlink-go/microlink/internal/tun"
	"github.com/microlink-go/microlink/internal/tunnel"
)

// ErrTUNMode is returned by ListenUDP and ListenTCP in TUN mode, where the
// host's kernel owns the node's tailnet addresses: listen with the net
// package on IPv4() and IPv6() instead.
var ErrTUNMode = errors.New("microlink: in TUN mode the host's own IP stack serves the node's addresses: listen with the net package")

// DefaultTUN is the name of the TUN device the CLI creates for --tun.
const DefaultTUN = "microlink0"

// validateTUN checks the TUN fields of a Config without touching the
// host.
func (c Config) validateTUN() error {
	if c.TUN == "" {
		return nil
	}
	if err := tun.ValidName(c.TUN); err != nil {
		return fmt.Errorf("microlink: TUN device name %q: %w", c.TUN, err)
	}
	return nil
}

// validateDNS checks AcceptDNS: only the TUN device lets the host reach
// the resolver.
func (c Config) validateDNS() error {
	if c.AcceptDNS && c.TUN == "" {
		return errors.New("microlink: AcceptDNS (--accept-dns) needs TUN mode: in userspace mode the host cannot reach 100.100.100.100")
	}
	return nil
}

// tunMode is the node's TUN device and the routing it added to the host.
// Packets the host routes into the device go to WireGuard through the
// stack's filter (Stack.Outbound); packets from peers that pass the
// filter, apart from TSMP and answers to the node's own pings, are
// written into the device (the stack's Forwarder).
type tunMode struct {
	cfg    Config
	logger *slog.Logger
	dev    *tun.Device
	host   *tun.Host
	kernel *router.Kernel // forwarding and SNAT for advertised routes, or nil
	stack  *tunnel.Stack
	dns    *hostResolver  // MagicDNS for the host
	osdns  *osdns.Manager // the host's resolver configuration, with AcceptDNS
	lookup *ownLookups    // the node's own lookups, or nil
	done   chan struct{}  // closed when the reader has returned
	// corker returns what batches the reader's sends (the current
	// magicsock), or nil.
	corker func() magicsock.Corker
	closed atomic.Bool

	writeErrs atomic.Uint64

	mu      sync.Mutex // serializes update
	applied *tun.Routing
}

// startTUN creates the device, removes what a killed run left on the host,
// installs the policy routing rules and marks the node's sockets, and
// serves the resolver r to the host. It runs before the node opens any
// socket.
func startTUN(cfg Config, stack *tunnel.Stack, r *dns.Resolver, cork func() magicsock.Corker, logger *slog.Logger) (*tunMode, error) {
	if err := tun.CheckAccess(); err != nil {
		return nil, err
	}
	dev, err := tun.Open(cfg.TUN, tun.DefaultMTU)
	if err != nil {
		return nil, err
	}
	if dev.Leftover {
		logger.Info("microlink: took over the TUN device an earlier run left", "dev", dev.Name())
	}
	host, err := tun.NewHost(dev, logger)
	if err != nil {
		dev.Close()
		return nil, err
	}
	if removed, err := router.Cleanup(); err != nil {
		logger.Warn("microlink: removing the nftables tables of an earlier run", "err", err)
	} else if removed {
		logger.Info("microlink: removed the nftables tables of an earlier run")
	}
	var kernel *router.Kernel
	if len(cfg.AdvertiseRoutes) > 0 {
		kernel, err = router.StartKernel(dev.Name(), cfg.AdvertiseRoutes, !cfg.NoSNAT, logger)
		if err != nil {
			host.Close()
			dev.Close()
			if errors.Is(err, router.ErrNoNftables) {
				err = fmt.Errorf("%w; without SNAT (--snat-subnet-routes=false, Config.NoSNAT) the node forwards without nftables, and the advertised networks need a route back to %v through this host", err, tailnetRange4)
			}
			return nil, err
		}
	}
	t := &tunMode{cfg: cfg, logger: logger, dev: dev, host: host, kernel: kernel, stack: stack, done: make(chan struct{}), corker: cork}
	t.dns = newHostResolver(r, tun.DefaultMTU, t.write, logger.With("component", "dns"))
	if cfg.AcceptDNS {
		t.osdns = osdns.New(osdns.Options{Device: dev.Name(), Backup: osdns.BackupPath(cfg.StateDir), Logger: logger})
		logger.Info("microlink: --accept-dns: the host's resolver will use MagicDNS", "via", t.osdns.Mode())
	}
	sockmark.Set(tun.Mark)
	if cfg.ExitNode != "" || cfg.AcceptDNS {
		t.lookup = divertLookups(t.osdns)
	}
	stack.SetForwarder(&tunnel.Forwarder{Deliver: t.write, All: true})
	go t.read()
	logger.Info("microlink: TUN mode", "dev", dev.Name(), "mtu", tun.DefaultMTU)
	return t, nil
}

// ownLookups are the node's own lookups of its control and relay
// servers' names, through the Go resolver, which must work while the
// tunnel is down: its sockets bypass an exit node's default route (they
// carry the mark), and, once AcceptDNS made resolv.conf name
// 100.100.100.100, they go to the servers the host named before rather
// than through the node's own device.
type ownLookups struct {
	osdns    *osdns.Manager // or nil
	next     atomic.Uint32  // spreads retries over the host's servers
	prevGo   bool
	prevDial func(ctx context.Context, network, address string) (net.Conn, error)
}

// divertLookups installs ownLookups in net.DefaultResolver; restore puts
// back what was there.
func divertLookups(m *osdns.Manager) *ownLookups {
	l := &ownLookups{osdns: m, prevGo: net.DefaultResolver.PreferGo, prevDial: net.DefaultResolver.Dial}
	net.DefaultResolver.PreferGo = true
	net.DefaultResolver.Dial = l.dial
	return l
}

func (l *ownLookups) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if l.osdns != nil {
		if ap, err := netip.ParseAddrPort(addr); err == nil && dns.IsResolver(ap.Addr()) {
			if hs := l.osdns.HostResolvers(); len(hs) > 0 {
				addr = hs[int(l.next.Add(1))%len(hs)].String()
			}
		}
	}
	d := net.Dialer{Control: sockmark.Control}
	return d.DialContext(ctx, network, addr)
}

func (l *ownLookups) restore() {
	net.DefaultResolver.PreferGo = l.prevGo
	net.DefaultResolver.Dial = l.prevDial
}

// setDNS points the host's resolver at MagicDNS with AcceptDNS, and tells
// the resolver r where the host's other names go since.
func (t *tunMode) setDNS(c osdns.Config, r *dns.Resolver) {
	if t.osdns == nil {
		return
	}
	if err := t.osdns.Set(c); err != nil {
		t.logger.Error("microlink: pointing the host's resolver at MagicDNS", "err", err)
	}
	r.SetHostResolvers(t.osdns.HostResolvers())
}

// read moves packets from the device to WireGuard, or to the resolver,
// until the device is closed. The packets of one read (up to 64 KiB of a
// TCP stream the host offloaded) go out to the network together: the
// socket is corked from the first of them until the read is done.
func (t *tunMode) read() {
	defer close(t.done)
	var held magicsock.Corker
	send := func(pkt []byte) {
		if held == nil && t.corker != nil {
			if held = t.corker(); held != nil {
				held.Cork()
			}
		}
		if forResolver(pkt) {
			t.dns.handle(pkt)
			return
		}
		t.stack.Outbound(pkt) // errors are counted as drops
	}
	for {
		err := t.dev.ReadPackets(send)
		if held != nil {
			held.Uncork()
			held = nil
		}
		if err != nil {
			if !t.closed.Load() {
				t.logger.Error("microlink: reading the TUN device", "err", err)
			}
			return
		}
	}
}

// write hands a packet from a peer to the host's IP stack.
func (t *tunMode) write(pkt []byte) {
	if _, err := t.dev.Write(pkt); err != nil {
		t.writeErrs.Add(1)
	}
}

// update moves the host's routing to what the netmap and the node's
// policy call for: the node's addresses on the device; the tailnet's
// ranges and the subnet routes the node accepts through it; with an exit
// node, the default routes too (kept while the exit node is away, so that
// traffic is dropped rather than leaking past the tunnel).
func (t *tunMode) update(nm *netmap.Map, policy routePolicy, exit key.NodePublic) {
	self, ok := nm.Self()
	if !ok {
		return
	}
	r := tun.Routing{Addrs: self.Addresses, Routes: []netip.Prefix{tailnetRange4, tailnetRange6}}
	nm.ForEachPeer(func(p *netmap.Peer) bool {
		if !p.HasOwnAllowedIPs() {
			return true
		}
		for _, pfx := range policy.allowedIPs(p, p.Key == exit && !exit.IsZero()) {
			if !ownRoute(p, pfx) && !isExitRoute(pfx) && !slices.Contains(r.Routes, pfx) {
				r.Routes = append(r.Routes, pfx)
			}
		}
		return true
	})
	if t.cfg.ExitNode != "" {
		r.Routes = append(r.Routes, exitRoute4, exitRoute6)
		if t.cfg.ExitNodeAllowLANAccess {
			r.Bypass = localNetworks(t.dev.Name())
		}
	}
	sortPrefixes(r.Routes)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed.Load() || (t.applied != nil && sameRouting(*t.applied, r)) {
		return
	}
	if err := t.host.Set(r); err != nil {
		t.logger.Error("microlink: configuring the host's routes", "err", err)
	} else {
		t.logger.Info("microlink: host routes set", "dev", t.dev.Name(), "addrs", r.Addrs, "routes", r.Routes, "bypass", r.Bypass)
	}
	t.applied = &r
}

// sortPrefixes sorts p by comparePrefix with a heapsort: a few hundred
// bytes of code where slices.SortFunc over netip.Prefix would link a sort
// of its own of about 9 KB.
func sortPrefixes(p []netip.Prefix) {
	down := func(i, n int) {
		for {
			c := 2*i + 1
			if c >= n {
				return
			}
			if c+1 < n && comparePrefix(p[c], p[c+1]) < 0 {
				c++
			}
			if comparePrefix(p[i], p[c]) >= 0 {
				return
			}
			p[i], p[c] = p[c], p[i]
			i = c
		}
	}
	for i := len(p)/2 - 1; i >= 0; i-- {
		down(i, len(p))
	}
	for n := len(p) - 1; n > 0; n-- {
		p[0], p[n] = p[n], p[0]
		down(0, n)
	}
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

func sameRouting(a, b tun.Routing) bool {
	return slices.Equal(a.Addrs, b.Addrs) && slices.Equal(a.Routes, b.Routes) && slices.Equal(a.Bypass, b.Bypass)
}

// localNetworks returns the networks the host is attached to, other than
// the TUN device's, loopback and link-local ones: the LANs that an exit
// node with LAN access allowed leaves outside the tunnel.
func localNetworks(tunName string) []netip.Prefix {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil
	}
	var out []netip.Prefix
	for _, ifi := range ifs {
		if ifi.Name == tunName || ifi.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := ifi.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok {
				continue
			}
			ones, _ := ipn.Mask.Size()
			p := netip.PrefixFrom(ip.Unmap(), ones).Masked()
			if p.Addr().IsLinkLocalUnicast() || inTailnetRange(p.Addr()) || p.Bits() == 0 || slices.Contains(out, p) {
				continue
			}
			out = append(out, p)
		}
	}
	sortPrefixes(out)
	return out
}

// close removes the device and the routing the node added, and stops
// marking sockets.
func (t *tunMode) close() {
	t.mu.Lock()
	t.closed.Store(true)
	t.mu.Unlock()
	if t.osdns != nil {
		// While the device is still there to answer.
		if err := t.osdns.Close(); err != nil {
			t.logger.Warn("microlink: restoring the host's resolver", "err", err)
		}
	}
	t.stack.SetForwarder(nil)
	t.dev.Close()
	<-t.done
	t.dns.close()
	if err := t.host.Close(); err != nil {
		t.logger.Warn("microlink: removing the host's routing rules", "err", err)
	}
	if t.kernel != nil {
		if err := t.kernel.Close(); err != nil {
			t.logger.Warn("microlink: removing the forwarding setup", "err", err)
		}
	}
	sockmark.Set(0)
	if t.lookup != nil {
		t.lookup.restore()
	}
}

// hostNetworks returns the networks of the host's interfaces (loopback
// aside) and its addresses on them.
func hostNetworks() (nets []netip.Prefix, ips []netip.Addr) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, nil
	}
	for _, ifi := range ifs {
		if ifi.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, _ := ifi.Addrs()
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok {
				continue
			}
			ip = ip.Unmap()
			ones, _ := ipn.Mask.Size()
			nets = append(nets, netip.PrefixFrom(ip, ones).Masked())
			ips = append(ips, ip)
		}
	}
	return nets, ips
}
