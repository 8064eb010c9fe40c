package microlink

import (
	"context"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/microlink-go/microlink/internal/dns"
	"github.com/microlink-go/microlink/internal/netmap"
	"github.com/microlink-go/microlink/internal/osdns"
	"github.com/microlink-go/microlink/internal/tailcfg"
)

// MagicDNS: every node runs the resolver of internal/dns. In userspace
// mode it serves the node's own lookups (Dial, the proxies, and
// connections to 100.100.100.100:53 made through Dial); in TUN mode the
// host reaches it through the device too (tundns.go), and AcceptDNS
// points the host's resolver at it. Peers cannot reach it, as they
// cannot reach a Tailscale client's quad-100 address.

// dnsNames answers the resolver's name lookups from the netmap.
type dnsNames struct{ nm *netmap.Map }

func (d dnsNames) LookupName(name string) ([]netip.Addr, bool) {
	addrs, ok := d.nm.Resolve(name)
	return addrs, ok && len(addrs) > 0
}

func (d dnsNames) LookupAddr(a netip.Addr) (string, bool) {
	if p, ok := d.nm.PeerByIP(a); ok && p.Name != "" {
		return p.Name, true
	}
	if self, ok := d.nm.Self(); ok && self.Name != "" && containsIP(self.Addresses, a) {
		return self.Name, true
	}
	return "", false
}

// newResolver returns the node's resolver; it forwards to tailnet
// resolvers (such as a split-DNS server on a peer) through the tailnet
// and to others through the host's network.
func (n *Node) newResolver() *dns.Resolver {
	return dns.New(dns.Options{
		Exchange: n.dnsExchange,
		Logger:   n.logger.With("component", "dns"),
	})
}

// updateDNS gives the resolver the netmap's DNS configuration, and with
// AcceptDNS points the host's resolver at it.
func (n *Node) updateDNS() {
	self, ok := n.nm.Self()
	dc := n.nm.DNS()
	cfg, skipped := dns.ConfigFromNetmap(dnsNames{n.nm}, self.Name, dc)
	for _, s := range skipped {
		n.logger.Debug("microlink: DNS resolver not supported (only plain DNS over UDP and TCP)", "resolver", s)
	}
	n.dns.SetConfig(cfg)
	n.mu.Lock()
	t := n.tun
	n.mu.Unlock()
	if t != nil && ok {
		t.setDNS(hostDNSConfig(cfg, self.Name, dc), n.dns)
	}
}

// hostDNSConfig is what the host's resolver is told with AcceptDNS:
// 100.100.100.100, the tailnet's search domains, and the names MagicDNS
// answers or routes (every name, when control names default resolvers).
func hostDNSConfig(c dns.Config, selfName string, dc *tailcfg.DNSConfig) osdns.Config {
	oc := osdns.Config{Nameservers: []netip.Addr{dns.IPv4}}
	add := func(list *[]string, name string) {
		name = strings.TrimSuffix(strings.ToLower(name), ".")
		if name != "" && !slices.Contains(*list, name) {
			*list = append(*list, name)
		}
	}
	if _, dom, ok := strings.Cut(selfName, "."); ok {
		add(&oc.Search, dom)
	}
	if dc != nil {
		for _, d := range dc.Domains {
			add(&oc.Search, d)
		}
	}
	for _, l := range c.Local {
		add(&oc.Match, l)
	}
	suffixes := slices.Collect(maps.Keys(c.Routes))
	slices.SortFunc(suffixes, strings.Compare) // the sort encoding/json links already
	for _, suffix := range suffixes {
		add(&oc.Match, suffix)
	}
	names := slices.Collect(maps.Keys(c.Extra))
	slices.SortFunc(names, strings.Compare)
	for _, name := range names {
		add(&oc.Match, name)
	}
	for i := 64; i < 128; i++ { // 100.64.0.0/10
		add(&oc.Match, strconv.Itoa(i)+".100.in-addr.arpa")
	}
	add(&oc.Match, "0.e.1.a.c.5.1.1.a.7.d.f.ip6.arpa") // fd7a:115c:a1e0::/48
	if len(c.Upstream) > 0 {
		oc.Match = append(oc.Match, ".")
	}
	return oc
}

func (n *Node) dnsExchange(ctx context.Context, server netip.AddrPort, query []byte, tcp bool) ([]byte, error) {
	// Through the tailnet only if a peer carries the server's address
	// for this node: a subnet route it accepts, or its exit node.
	if data, err := n.dataPlane(); err != nil || !data.wg.HasRoute(server.Addr().Unmap()) {
		return dns.HostExchange(ctx, server, query, tcp)
	}
	network := "udp"
	if tcp {
		network = "tcp"
	}
	c, err := n.dialAddr(ctx, network, server)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return dns.ExchangeConn(ctx, c, query, tcp)
}

// dialResolver returns a connection to the node's own resolver, served in
// process: a stream for TCP, a datagram conn for UDP.
func (n *Node) dialResolver(network string, dst netip.AddrPort) (net.Conn, error) {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil, ErrClosed
	}
	ctx := n.dnsCtx
	n.mu.Unlock()
	if strings.HasPrefix(network, "tcp") {
		a, b := net.Pipe()
		n.dnsConns.Go(func() { n.dns.ServeTCP(ctx, b) })
		return &addrConn{Conn: a, local: resolverClientAddr(dst, "tcp"), remote: net.TCPAddrFromAddrPort(dst)}, nil
	}
	return newResolverUDP(ctx, n.dns, dst), nil
}

func resolverClientAddr(dst netip.AddrPort, network string) net.Addr {
	ip := netip.MustParseAddr("127.0.0.1")
	if dst.Addr().Is6() {
		ip = netip.IPv6Loopback()
	}
	if network == "tcp" {
		return net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip, 0))
	}
	return net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0))
}

// addrConn gives a pipe the addresses of the connection it stands for.
type addrConn struct {
	net.Conn
	local, remote net.Addr
}

func (c *addrConn) LocalAddr() net.Addr  { return c.local }
func (c *addrConn) RemoteAddr() net.Addr { return c.remote }

// resolverUDP is a datagram connection to the in-process resolver: each
// Write is a query, each Read an answer.
type resolverUDP struct {
	ctx    context.Context
	r      *dns.Resolver
	remote netip.AddrPort

	mu       sync.Mutex
	answers  [][]byte
	ready    chan struct{} // closed and replaced when an answer is queued or the conn closes
	closed   bool
	deadline time.Time
}

const resolverUDPQueue = 16

func newResolverUDP(ctx context.Context, r *dns.Resolver, remote netip.AddrPort) *resolverUDP {
	return &resolverUDP{ctx: ctx, r: r, remote: remote, ready: make(chan struct{})}
}

func (c *resolverUDP) Write(b []byte) (int, error) {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return 0, net.ErrClosed
	}
	resp := c.r.Respond(c.ctx, b, false)
	if resp == nil {
		return len(b), nil // dropped, as a server would drop it
	}
	c.mu.Lock()
	if len(c.answers) < resolverUDPQueue {
		c.answers = append(c.answers, resp)
		close(c.ready)
		c.ready = make(chan struct{})
	}
	c.mu.Unlock()
	return len(b), nil
}

func (c *resolverUDP) Read(b []byte) (int, error) {
	for {
		c.mu.Lock()
		if len(c.answers) > 0 {
			a := c.answers[0]
			c.answers = c.answers[1:]
			c.mu.Unlock()
			return copy(b, a), nil
		}
		if c.closed {
			c.mu.Unlock()
			return 0, net.ErrClosed
		}
		ready, dl := c.ready, c.deadline
		c.mu.Unlock()
		var timeout <-chan time.Time
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				return 0, &net.OpError{Op: "read", Net: "udp", Addr: c.RemoteAddr(), Err: errTimeout{}}
			}
			t := time.NewTimer(d)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-ready:
		case <-timeout:
		case <-c.ctx.Done():
			return 0, net.ErrClosed
		}
	}
}

func (c *resolverUDP) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		c.closed = true
		close(c.ready)
	}
	return nil
}

func (c *resolverUDP) LocalAddr() net.Addr  { return resolverClientAddr(c.remote, "udp") }
func (c *resolverUDP) RemoteAddr() net.Addr { return net.UDPAddrFromAddrPort(c.remote) }
func (c *resolverUDP) SetDeadline(t time.Time) error {
	return c.SetReadDeadline(t)
}
func (c *resolverUDP) SetWriteDeadline(time.Time) error { return nil }
func (c *resolverUDP) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	close(c.ready)
	c.ready = make(chan struct{})
	c.mu.Unlock()
	return nil
}

type errTimeout struct{}

func (errTimeout) Error() string   { return "i/o timeout" }
func (errTimeout) Timeout() bool   { return true }
func (errTimeout) Temporary() bool { return true }

// recoverHostDNS puts back the host's resolv.conf if a run killed with
// AcceptDNS left it pointing at MagicDNS, before the node looks up its
// control server. Only a node that could have made the backup looks for
// it: one in TUN mode or with a state directory of its own.
func (n *Node) recoverHostDNS() {
	if n.cfg.TUN == "" && n.cfg.StateDir == "" {
		return
	}
	backup := osdns.BackupPath(n.cfg.StateDir)
	if ok, err := osdns.Recover(backup, n.logger); err != nil {
		n.logger.Warn("microlink: restoring the host's resolv.conf after an earlier run", "backup", backup, "err", err)
	} else if ok {
		n.logger.Info("microlink: restored the host's resolv.conf an earlier run left pointing at MagicDNS", "backup", backup)
	}
}
