package tun

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/microlink-go/microlink/internal/netlink"
)

// Routing is the host configuration the node wants for its device.
type Routing struct {
	// Addrs are the node's own addresses, /32 and /128.
	Addrs []netip.Prefix
	// Routes are the destinations the host sends into the device: the
	// tailnet's ranges, accepted subnet routes, and with an exit node
	// 0.0.0.0/0 and ::/0.
	Routes []netip.Prefix
	// Bypass are destinations the host keeps reaching through its own
	// routes although Routes covers them: the LANs while an exit node
	// is in use with LAN access allowed.
	Bypass []netip.Prefix
}

// Host holds the routing state the node added to the host, so that it
// can change it and remove all of it. It is not safe for concurrent use.
type Host struct {
	nl     *netlink.Conn
	link   int
	logger *slog.Logger
	table  uint32 // Table, or the main table without policy routing
	ipv6   bool   // the device takes IPv6 addresses

	addrs, routes, bypass map[netip.Prefix]bool
}

// rules are the node's policy routing rules, as tailscaled's: packets
// from the node's own marked sockets try the main and default tables and
// go nowhere else; all other packets try the node's table first, and
// fall through to the usual rules where it has no route.
func rules(ipv6 bool) []netlink.Rule {
	return []netlink.Rule{
		{IPv6: ipv6, Priority: RulePriority, Mark: Mark, Mask: MarkMask, Table: unix.RT_TABLE_MAIN},
		{IPv6: ipv6, Priority: RulePriority + 20, Mark: Mark, Mask: MarkMask, Table: unix.RT_TABLE_DEFAULT},
		{IPv6: ipv6, Priority: RulePriority + 40, Mark: Mark, Mask: MarkMask, Action: netlink.RuleUnreachable},
		{IPv6: ipv6, Priority: RulePriority + 60, Table: Table},
	}
}

// NewHost removes what an earlier run left behind (see Cleanup) and
// installs the node's policy routing rules for dev. Without policy
// routing in the kernel it routes in the main table instead, where exit
// nodes cannot work.
func NewHost(dev *Device, logger *slog.Logger) (*Host, error) {
	nl, err := netlink.DialRoute()
	if err != nil {
		return nil, fmt.Errorf("tun: %w", err)
	}
	h := &Host{nl: nl, link: dev.Index(), logger: logger, table: Table, ipv6: true,
		addrs: map[netip.Prefix]bool{}, routes: map[netip.Prefix]bool{}, bypass: map[netip.Prefix]bool{}}
	if n, err := cleanup(nl); err != nil {
		nl.Close()
		return nil, err
	} else if n > 0 {
		logger.Info("tun: removed the routing rules and routes of an earlier run", "count", n)
	}
families:
	for _, ipv6 := range []bool{false, true} {
		for _, r := range rules(ipv6) {
			err := nl.RuleAdd(r)
			switch {
			case err == nil:
			case ipv6 && errors.Is(err, unix.EAFNOSUPPORT):
				h.ipv6 = false
				continue families
			case !ipv6 && (errors.Is(err, unix.EAFNOSUPPORT) || errors.Is(err, unix.EOPNOTSUPP)):
				logger.Warn("tun: the kernel has no policy routing; routing in the main table, where an exit node cannot be used", "err", err)
				h.table = unix.RT_TABLE_MAIN
				break families
			default:
				h.Close()
				return nil, fmt.Errorf("tun: adding routing rule %d: %w", r.Priority, err)
			}
		}
	}
	return h, nil
}

// Set moves the host's addresses and routes for the device to r.
func (h *Host) Set(r Routing) error {
	if h.table != Table && (slices.ContainsFunc(r.Routes, isDefault) || len(r.Bypass) > 0) {
		return errors.New("tun: an exit node needs policy routing in the kernel (CONFIG_IP_MULTIPLE_TABLES)")
	}
	var errs []error
	sync := func(cur map[netip.Prefix]bool, want []netip.Prefix, add, del func(netip.Prefix) error) {
		wantSet := map[netip.Prefix]bool{}
		for _, p := range want {
			if p.Addr().Is6() && !h.ipv6 {
				continue
			}
			wantSet[p] = true
			if cur[p] {
				continue
			}
			if err := add(p); err != nil {
				errs = append(errs, err)
				continue
			}
			cur[p] = true
		}
		for p := range cur {
			if !wantSet[p] {
				if err := del(p); err != nil {
					errs = append(errs, err)
				}
				delete(cur, p)
			}
		}
	}
	sync(h.addrs, r.Addrs, h.addAddr, func(p netip.Prefix) error { return h.nl.AddrDel(h.link, p) })
	sync(h.routes, r.Routes,
		func(p netip.Prefix) error { return h.nl.RouteReplace(h.route(p)) },
		func(p netip.Prefix) error { return h.nl.RouteDel(h.route(p)) })
	sync(h.bypass, r.Bypass,
		func(p netip.Prefix) error { return h.nl.RouteReplace(h.throw(p)) },
		func(p netip.Prefix) error { return h.nl.RouteDel(h.throw(p)) })
	return errors.Join(errs...)
}

func isDefault(p netip.Prefix) bool { return p.Bits() == 0 }

func (h *Host) route(p netip.Prefix) netlink.Route {
	return netlink.Route{Dst: p, Table: h.table, Link: h.link}
}

func (h *Host) throw(p netip.Prefix) netlink.Route {
	return netlink.Route{Dst: p, Table: h.table, Type: netlink.RouteThrow}
}

// addAddr adds an address to the device. A host with IPv6 turned off
// refuses IPv6 addresses; the node then goes on with IPv4 only.
func (h *Host) addAddr(p netip.Prefix) error {
	err := h.nl.AddrAdd(h.link, p)
	if err != nil && p.Addr().Is6() && (errors.Is(err, unix.EACCES) || errors.Is(err, unix.EAFNOSUPPORT) || errors.Is(err, unix.EPERM)) {
		h.logger.Warn("tun: IPv6 is off on this host; the tailnet is reachable over IPv4 only", "err", err)
		h.ipv6 = false
		return nil
	}
	if err != nil {
		return fmt.Errorf("tun: adding address %v: %w", p, err)
	}
	return nil
}

// Close removes the routes and rules the node added. The device's
// addresses and the routes through it go away with the device itself.
func (h *Host) Close() error {
	var errs []error
	for p := range h.bypass {
		errs = append(errs, h.nl.RouteDel(h.throw(p)))
	}
	for p := range h.routes {
		errs = append(errs, h.nl.RouteDel(h.route(p)))
	}
	if h.table == Table {
		for _, ipv6 := range []bool{false, true} {
			for _, r := range rules(ipv6) {
				if err := h.nl.RuleDel(r); err != nil && !errors.Is(err, unix.EAFNOSUPPORT) {
					errs = append(errs, err)
				}
			}
		}
	}
	h.nl.Close()
	return errors.Join(errs...)
}

// Cleanup removes the policy routing rules and the routes of the node's
// table that a run killed before it could clean up left on the host, and
// returns how many it removed.
func Cleanup() (int, error) {
	nl, err := netlink.DialRoute()
	if err != nil {
		return 0, fmt.Errorf("tun: %w", err)
	}
	defer nl.Close()
	return cleanup(nl)
}

func cleanup(nl *netlink.Conn) (int, error) {
	n := 0
	for _, ipv6 := range []bool{false, true} {
		rs, err := nl.Rules(ipv6)
		if ipv6 && errors.Is(err, unix.EAFNOSUPPORT) {
			continue
		}
		if err != nil {
			return n, fmt.Errorf("tun: listing routing rules: %w", err)
		}
		for _, r := range rs {
			ours := r.Priority >= RulePriority && r.Priority <= RulePriority+60 &&
				(r.Table == Table || (r.Mark == Mark && r.Mask == MarkMask))
			if !ours {
				continue
			}
			if err := nl.RuleDel(r); err != nil {
				return n, fmt.Errorf("tun: removing routing rule %d: %w", r.Priority, err)
			}
			n++
		}
	}
	routes, err := nl.Routes(Table)
	if err != nil {
		return n, fmt.Errorf("tun: listing the routes of table %d: %w", Table, err)
	}
	for _, r := range routes {
		if err := nl.RouteDel(r); err != nil {
			return n, fmt.Errorf("tun: removing route %v: %w", r.Dst, err)
		}
		n++
	}
	return n, nil
}
