package netmon

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// netlinkGroups are the rtnetlink multicast groups the monitor joins:
// links, IPv4 and IPv6 addresses, IPv4 and IPv6 routes.
const netlinkGroups = unix.RTMGRP_LINK | unix.RTMGRP_IPV4_IFADDR | unix.RTMGRP_IPV6_IFADDR |
	unix.RTMGRP_IPV4_ROUTE | unix.RTMGRP_IPV6_ROUTE

// netlinkWatcher reads rtnetlink notifications from a socket in the
// network namespace of the thread that opened it.
type netlinkWatcher struct {
	f   *os.File // non-blocking, so that reads honour deadlines and Close
	buf []byte
}

func newWatcher() (watcher, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: netlinkGroups}); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("bind", err)
	}
	return &netlinkWatcher{f: os.NewFile(uintptr(fd), "rtnetlink"), buf: make([]byte, 64<<10)}, nil
}

func (w *netlinkWatcher) close() { w.f.Close() }

func (w *netlinkWatcher) wait(deadline time.Time) (relevant, timedOut bool, err error) {
	if err := w.f.SetReadDeadline(deadline); err != nil {
		if errors.Is(err, os.ErrClosed) {
			return false, false, errClosed
		}
		return false, false, err
	}
	n, err := w.f.Read(w.buf)
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return false, true, nil
	case errors.Is(err, os.ErrClosed):
		return false, false, errClosed
	case errors.Is(err, unix.ENOBUFS):
		// The kernel dropped notifications: something happened.
		return true, false, nil
	case err != nil:
		return false, false, err
	}
	return isRelevant(w.buf[:n]), false, nil
}

// isRelevant reports whether a batch of rtnetlink notifications may change
// the State: any link or address message, and changes of default routes
// in the main table. Other routes come and go without mattering.
func isRelevant(b []byte) bool {
	msgs, err := parseMessages(b)
	if err != nil {
		return true
	}
	for i := range msgs {
		switch msgs[i].typ {
		case unix.RTM_NEWLINK, unix.RTM_DELLINK, unix.RTM_NEWADDR, unix.RTM_DELADDR:
			return true
		case unix.RTM_NEWROUTE, unix.RTM_DELROUTE:
			if _, ok := parseDefaultRoute(&msgs[i]); ok {
				return true
			}
		}
	}
	return false
}

// nlMessage is one netlink message: its type and what follows the header.
type nlMessage struct {
	typ  uint16
	data []byte
}

// parseMessages splits a datagram into netlink messages.
func parseMessages(b []byte) ([]nlMessage, error) {
	var out []nlMessage
	for len(b) >= unix.SizeofNlMsghdr {
		n := int(binary.NativeEndian.Uint32(b))
		if n < unix.SizeofNlMsghdr || n > len(b) {
			return out, errors.New("malformed netlink message")
		}
		out = append(out, nlMessage{typ: binary.NativeEndian.Uint16(b[4:]), data: b[unix.SizeofNlMsghdr:n]})
		b = b[min(nlmAlign(n), len(b)):]
	}
	return out, nil
}

// attr is one route attribute.
type attr struct {
	typ uint16
	val []byte
}

// parseAttrs splits b into route attributes, up to the first malformed
// one.
func parseAttrs(b []byte) []attr {
	var out []attr
	for len(b) >= unix.SizeofRtAttr {
		n := int(binary.NativeEndian.Uint16(b))
		if n < unix.SizeofRtAttr || n > len(b) {
			break
		}
		out = append(out, attr{typ: binary.NativeEndian.Uint16(b[2:]), val: b[unix.SizeofRtAttr:n]})
		b = b[min(rtaAlign(n), len(b)):]
	}
	return out
}

func nlmAlign(n int) int { return (n + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }

// routeMsg holds the fields of a struct rtmsg the monitor reads.
type routeMsg struct {
	dstLen, table, typ uint8
}

func parseRouteMsg(data []byte) (routeMsg, bool) {
	if len(data) < unix.SizeofRtMsg {
		return routeMsg{}, false
	}
	// struct rtmsg: family, dst_len, src_len, tos, table, protocol,
	// scope, type, flags.
	return routeMsg{dstLen: data[1], table: data[4], typ: data[7]}, true
}

// parseDefaultRoute returns the next hops of msg if it is a unicast
// default route of the main table.
func parseDefaultRoute(msg *nlMessage) ([]osRoute, bool) {
	rm, ok := parseRouteMsg(msg.data)
	if !ok || rm.dstLen != 0 || rm.typ != unix.RTN_UNICAST {
		return nil, false
	}
	table := uint32(rm.table)
	var r osRoute
	var multipath []byte
	for _, a := range parseAttrs(msg.data[unix.SizeofRtMsg:]) {
		switch a.typ {
		case unix.RTA_TABLE:
			if len(a.val) >= 4 {
				table = binary.NativeEndian.Uint32(a.val)
			}
		case unix.RTA_OIF:
			if len(a.val) >= 4 {
				r.index = int(binary.NativeEndian.Uint32(a.val))
			}
		case unix.RTA_GATEWAY:
			r.gateway, _ = netip.AddrFromSlice(a.val)
		case unix.RTA_PRIORITY:
			if len(a.val) >= 4 {
				r.metric = binary.NativeEndian.Uint32(a.val)
			}
		case unix.RTA_MULTIPATH:
			multipath = a.val
		}
	}
	if table != unix.RT_TABLE_MAIN {
		return nil, false
	}
	if multipath == nil {
		return []osRoute{r}, true
	}
	return parseNextHops(multipath, r.metric), true
}

// parseNextHops reads the struct rtnexthop list of an RTA_MULTIPATH
// attribute: length (2 bytes), flags, hops, interface index (4 bytes),
// then the hop's own attributes.
func parseNextHops(b []byte, metric uint32) []osRoute {
	var out []osRoute
	for len(b) >= unix.SizeofRtNexthop {
		n := int(binary.NativeEndian.Uint16(b))
		if n < unix.SizeofRtNexthop || n > len(b) {
			break
		}
		r := osRoute{index: int(int32(binary.NativeEndian.Uint32(b[4:]))), metric: metric}
		for _, a := range parseAttrs(b[unix.SizeofRtNexthop:n]) {
			if a.typ == unix.RTA_GATEWAY {
				r.gateway, _ = netip.AddrFromSlice(a.val)
			}
		}
		out = append(out, r)
		b = b[min(rtaAlign(n), len(b)):]
	}
	return out
}

func rtaAlign(n int) int { return (n + unix.RTA_ALIGNTO - 1) &^ (unix.RTA_ALIGNTO - 1) }

// defaultRoutes dumps the kernel's routes and returns the default ones of
// the main table.
func defaultRoutes() ([]osRoute, error) {
	var out []osRoute
	for _, family := range []int{unix.AF_INET, unix.AF_INET6} {
		b, err := syscall.NetlinkRIB(unix.RTM_GETROUTE, family)
		if err != nil {
			if family == unix.AF_INET6 && errors.Is(err, unix.EAFNOSUPPORT) {
				continue // a kernel without IPv6
			}
			return nil, fmt.Errorf("listing routes: %w", os.NewSyscallError("netlink", err))
		}
		msgs, err := parseMessages(b)
		if err != nil {
			return nil, fmt.Errorf("listing routes: %w", err)
		}
		for i := range msgs {
			if msgs[i].typ != unix.RTM_NEWROUTE {
				continue
			}
			if hops, ok := parseDefaultRoute(&msgs[i]); ok {
				for _, h := range hops {
					h.gateway = h.gateway.Unmap()
					out = append(out, h)
				}
			}
		}
	}
	return out, nil
}
