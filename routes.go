package microlink

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/microlink-go/microlink/internal/key"
	"github.com/microlink-go/microlink/internal/netmap"
)

// The address ranges of the tailnet itself: nodes' own IPv4 and IPv6
// addresses come from these.
var (
	tailnetRange4 = netip.MustParsePrefix("100.64.0.0/10")
	tailnetRange6 = netip.MustParsePrefix("fd7a:115c:a1e0::/48")

	exitRoute4 = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	exitRoute6 = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
)

// isExitRoute reports whether p is a default route, which only an exit
// node serves.
func isExitRoute(p netip.Prefix) bool { return p.Bits() == 0 }

// inTailnetRange reports whether a is in the tailnet's own address ranges.
func inTailnetRange(a netip.Addr) bool {
	return tailnetRange4.Contains(a) || tailnetRange6.Contains(a)
}

// validateRoutes checks the routing fields of a Config.
func (c Config) validateRoutes() error {
	var exit4, exit6 bool
	for _, r := range c.AdvertiseRoutes {
		switch {
		case !r.IsValid():
			return errors.New("microlink: invalid route in AdvertiseRoutes")
		case r.Addr().Is4In6() || r.Addr().Zone() != "":
			return fmt.Errorf("microlink: advertised route %v: not a plain IPv4 or IPv6 prefix", r)
		case r != r.Masked():
			return fmt.Errorf("microlink: advertised route %v has bits set beyond its length; did you mean %v?", r, r.Masked())
		case r == exitRoute4:
			exit4 = true
		case r == exitRoute6:
			exit6 = true
		case r.Overlaps(tailnetRange4) || r.Overlaps(tailnetRange6):
			return fmt.Errorf("microlink: advertised route %v overlaps the tailnet's own addresses (%v, %v)", r, tailnetRange4, tailnetRange6)
		}
	}
	if exit4 != exit6 {
		return errors.New("microlink: an exit node advertises 0.0.0.0/0 and ::/0 together")
	}
	if c.ExitNode != "" {
		if exit4 {
			return errors.New("microlink: a node cannot use an exit node and offer itself as one")
		}
		if ip, err := netip.ParseAddr(c.ExitNode); err == nil && !inTailnetRange(ip.Unmap()) {
			return fmt.Errorf("microlink: exit node %v is not a tailnet address (%v, %v)", ip, tailnetRange4, tailnetRange6)
		}
		if strings.ContainsFunc(c.ExitNode, func(r rune) bool { return r <= ' ' || r == '/' }) {
			return fmt.Errorf("microlink: exit node %q is neither a node name nor a tailnet address", c.ExitNode)
		}
	}
	return nil
}

// routePolicy decides which of its peers' routes a node uses, as
// tailscaled does: a peer's own addresses always; its subnet routes only
// with AcceptRoutes; its exit routes only if it is the chosen exit node.
// The same prefixes are a peer's WireGuard AllowedIPs, so they also
// decide which source addresses the node accepts from the peer.
type routePolicy struct {
	acceptRoutes bool
	exitNode     string // a name or tailnet IP; "" for none
}

// exitPeer returns the peer the policy's exit node names, if it is in nm.
// It must not be called while nm's lock is held (inside ForEachPeer).
func (r routePolicy) exitPeer(nm *netmap.Map) (netmap.Peer, bool) {
	if r.exitNode == "" {
		return netmap.Peer{}, false
	}
	if ip, err := netip.ParseAddr(r.exitNode); err == nil {
		return nm.PeerByIP(ip.Unmap())
	}
	addrs, ok := nm.Resolve(r.exitNode)
	if !ok || len(addrs) == 0 {
		return netmap.Peer{}, false
	}
	return nm.PeerByIP(addrs[0])
}

// ownRoute reports whether a prefix of p's AllowedIPs stands for the peer
// itself rather than a network behind it: one of its addresses, or a
// single address in the tailnet's ranges.
func ownRoute(p *netmap.Peer, pfx netip.Prefix) bool {
	return slices.Contains(p.Addresses, pfx) || (pfx.IsSingleIP() && inTailnetRange(pfx.Addr()))
}

// allowedIPs returns the prefixes the node routes to p and accepts from
// it; isExit says whether p is the chosen exit node. When nothing is left
// out the result is p.AllowedIPs itself.
func (r routePolicy) allowedIPs(p *netmap.Peer, isExit bool) []netip.Prefix {
	if !p.HasOwnAllowedIPs() {
		return p.AllowedIPs
	}
	keep := func(pfx netip.Prefix) bool {
		switch {
		case ownRoute(p, pfx):
			return true
		case isExitRoute(pfx):
			return isExit
		}
		return r.acceptRoutes
	}
	n := 0
	for _, pfx := range p.AllowedIPs {
		if keep(pfx) {
			n++
		}
	}
	if n == len(p.AllowedIPs) {
		return p.AllowedIPs
	}
	out := make([]netip.Prefix, 0, n)
	for _, pfx := range p.AllowedIPs {
		if keep(pfx) {
			out = append(out, pfx)
		}
	}
	return out
}

// peerRoutes returns the routes of p beyond its own addresses: the subnet
// and exit routes control approved for it.
func peerRoutes(p *netmap.Peer) []netip.Prefix {
	if !p.HasOwnAllowedIPs() {
		return nil
	}
	var out []netip.Prefix
	for _, pfx := range p.AllowedIPs {
		if !ownRoute(p, pfx) {
			out = append(out, pfx)
		}
	}
	return out
}

// offersExit reports whether control approved exit routes for p.
func offersExit(p *netmap.Peer) bool {
	return slices.ContainsFunc(p.AllowedIPs, isExitRoute)
}

// routeTo checks that the node has a route to dst under the policy,
// with exitKey the exit node in use (zero if none), and otherwise returns
// an error that wraps ErrNoRoute and says why.
func (r routePolicy) routeTo(nm *netmap.Map, exitKey key.NodePublic, dst netip.Addr) error {
	_, err := r.via(nm, exitKey, dst)
	return err
}

// via returns the short name of the peer that dst is routed to: the one
// whose allowed IPs under the policy hold the longest prefix containing
// dst, other than a default route for a tailnet address (which the exit
// node would drop).
func (r routePolicy) via(nm *netmap.Map, exitKey key.NodePublic, dst netip.Addr) (string, error) {
	dst = dst.Unmap()
	if p, ok := nm.PeerByIP(dst); ok && !p.ExpiredAt(nm.Now()) {
		return p.ShortName(), nil
	}
	var usable, unaccepted string
	best := -1
	if inTailnetRange(dst) {
		best = 0 // an exit node does not carry the tailnet's own addresses
	}
	now := nm.Now()
	nm.ForEachPeer(func(p *netmap.Peer) bool {
		if p.ExpiredAt(now) {
			return true
		}
		for _, pfx := range r.allowedIPs(p, p.Key == exitKey && !exitKey.IsZero()) {
			if pfx.Bits() > best && pfx.Contains(dst) {
				usable, best = p.ShortName(), pfx.Bits()
			}
		}
		for _, pfx := range peerRoutes(p) {
			if !isExitRoute(pfx) && pfx.Contains(dst) {
				unaccepted = p.ShortName()
			}
		}
		return true
	})
	switch {
	case usable != "":
		return usable, nil
	case inTailnetRange(dst):
		return "", noRoute(dst, "no node of the tailnet has this address")
	case unaccepted != "":
		return "", noRoute(dst, "%s offers a route to it, but the node does not accept subnet routes (Config.AcceptRoutes, --accept-routes)", unaccepted)
	case r.exitNode == "":
		return "", noRoute(dst, "the address is outside the tailnet and no exit node is in use (Config.ExitNode, --exit-node)")
	}
	p, ok := r.exitPeer(nm)
	switch {
	case !ok:
		return "", noRoute(dst, "exit node %q is not in the tailnet", r.exitNode)
	case !offersExit(&p):
		return "", noRoute(dst, "%s does not offer itself as an exit node, or control has not approved it", p.ShortName())
	}
	return "", noRoute(dst, "exit node %s cannot be used now", p.ShortName())
}

// noRouteError is a dial's ErrNoRoute with the reason.
type noRouteError struct {
	dst    netip.Addr
	reason string
}

func (e *noRouteError) Error() string {
	return fmt.Sprintf("microlink: no route to %v: %s", e.dst, e.reason)
}
func (e *noRouteError) Unwrap() error { return ErrNoRoute }

func noRoute(dst netip.Addr, format string, args ...any) error {
	return &noRouteError{dst, fmt.Sprintf(format, args...)}
}

// reservedForExit are the networks an exit node never lets the tailnet
// reach through its default route, as in tailscaled: private and
// link-local ranges, multicast and the tailnet's own. A node that should
// give access to its LAN advertises that route as well.
var reservedForExit = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("224.0.0.0/4"),
	tailnetRange4,
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("ff00::/8"),
	tailnetRange6,
}

// servedNets returns the destinations the node forwards for its peers, as
// its packet filter's local networks (beside its own addresses): the
// advertised subnet routes, and for an exit node the whole internet
// except reserved networks and the host's own LANs (but with the host's
// own addresses on them).
func (n *Node) servedNets() []netip.Prefix {
	var out, lans []netip.Prefix
	var hostIPs []netip.Addr
	for _, r := range n.cfg.AdvertiseRoutes {
		if !isExitRoute(r) {
			out = append(out, r)
			continue
		}
		if lans == nil {
			lans, hostIPs = hostNetworks()
		}
		holes := append(slices.Clip(reservedForExit), lans...)
		out = append(out, subtractPrefixes(r, holes)...)
		for _, ip := range hostIPs {
			if ip.Is4() == r.Addr().Is4() && !slices.ContainsFunc(reservedForExit, func(p netip.Prefix) bool { return p.Contains(ip) }) {
				out = append(out, netip.PrefixFrom(ip, ip.BitLen()))
			}
		}
	}
	return out
}

// subtractPrefixes returns prefixes that cover p except what holes cover.
func subtractPrefixes(p netip.Prefix, holes []netip.Prefix) []netip.Prefix {
	inside := false
	for _, h := range holes {
		if h.Addr().Is4() != p.Addr().Is4() {
			continue
		}
		if h.Bits() <= p.Bits() && h.Contains(p.Addr()) {
			return nil // all of p is a hole
		}
		if p.Contains(h.Addr()) {
			inside = true
		}
	}
	if !inside {
		return []netip.Prefix{p}
	}
	lo := netip.PrefixFrom(p.Addr(), p.Bits()+1)
	b := p.Addr().AsSlice()
	b[p.Bits()/8] |= 0x80 >> (p.Bits() % 8)
	hiAddr, _ := netip.AddrFromSlice(b)
	hi := netip.PrefixFrom(hiAddr, p.Bits()+1)
	return append(subtractPrefixes(lo, holes), subtractPrefixes(hi, holes)...)
}
