package netlink

import (
	"encoding/binary"
	"errors"
	"net/netip"

	"golang.org/x/sys/unix"
)

// DialRoute opens an rtnetlink socket.
func DialRoute() (*Conn, error) { return Dial(unix.NETLINK_ROUTE) }

func family(a netip.Addr) uint8 {
	if a.Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

// linkMsg is an ifinfomsg for the link with index.
func linkMsg(index int, flags, change uint32) *Builder {
	h := make([]byte, unix.SizeofIfInfomsg)
	binary.NativeEndian.PutUint32(h[4:8], uint32(int32(index)))
	binary.NativeEndian.PutUint32(h[8:12], flags)
	binary.NativeEndian.PutUint32(h[12:16], change)
	return new(Builder).Bytes(h)
}

// LinkSetUp brings the link with index up.
func (c *Conn) LinkSetUp(index int) error {
	_, err := c.Execute(linkMsg(index, unix.IFF_UP, unix.IFF_UP).Message(unix.RTM_NEWLINK, 0))
	return err
}

// LinkSetMTU sets the MTU of the link with index.
func (c *Conn) LinkSetMTU(index, mtu int) error {
	_, err := c.Execute(linkMsg(index, 0, 0).U32(unix.IFLA_MTU, uint32(mtu)).Message(unix.RTM_NEWLINK, 0))
	return err
}

// LinkDel deletes the link with index.
func (c *Conn) LinkDel(index int) error {
	_, err := c.Execute(linkMsg(index, 0, 0).Message(unix.RTM_DELLINK, 0))
	return err
}

// addrMsg is an ifaddrmsg with its address attributes for p on the link
// with index.
func addrMsg(index int, p netip.Prefix) *Builder {
	h := make([]byte, unix.SizeofIfAddrmsg)
	h[0] = family(p.Addr())
	h[1] = uint8(p.Bits())
	h[2] = unix.IFA_F_NODAD // a TUN device has no neighbours to ask
	binary.NativeEndian.PutUint32(h[4:8], uint32(index))
	return new(Builder).Bytes(h).Addr(unix.IFA_LOCAL, p.Addr()).Addr(unix.IFA_ADDRESS, p.Addr())
}

// AddrAdd adds address p (with its prefix length) to the link with
// index; an address already there is not an error.
func (c *Conn) AddrAdd(index int, p netip.Prefix) error {
	_, err := c.Execute(addrMsg(index, p).Message(unix.RTM_NEWADDR, FlagCreate|FlagReplace))
	return err
}

// AddrDel removes address p from the link with index.
func (c *Conn) AddrDel(index int, p netip.Prefix) error {
	_, err := c.Execute(addrMsg(index, p).Message(unix.RTM_DELADDR, 0))
	return err
}

// Addrs returns the addresses of the link with index (0 for every
// link).
func (c *Conn) Addrs(index int) ([]netip.Prefix, error) {
	h := make([]byte, unix.SizeofIfAddrmsg)
	msgs, err := c.Execute(new(Builder).Bytes(h).Message(unix.RTM_GETADDR, FlagDump))
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, m := range msgs {
		if m.Type != unix.RTM_NEWADDR || len(m.Data) < unix.SizeofIfAddrmsg {
			continue
		}
		if index != 0 && int(binary.NativeEndian.Uint32(m.Data[4:8])) != index {
			continue
		}
		bits := int(m.Data[1])
		var local, addr netip.Addr
		for _, a := range ParseAttrs(m.Data[unix.SizeofIfAddrmsg:]) {
			ip, ok := netip.AddrFromSlice(a.Data)
			switch {
			case !ok:
			case a.Type == unix.IFA_LOCAL:
				local = ip
			case a.Type == unix.IFA_ADDRESS:
				addr = ip
			}
		}
		if local.IsValid() {
			addr = local
		}
		if p, err := addr.Prefix(bits); err == nil && addr.IsValid() {
			out = append(out, netip.PrefixFrom(addr, p.Bits()))
		}
	}
	return out, nil
}

// Route types.
const (
	RouteUnicast     = unix.RTN_UNICAST
	RouteThrow       = unix.RTN_THROW       // ends the lookup in this table
	RouteUnreachable = unix.RTN_UNREACHABLE // fails with "no route to host"
)

// Route is a route in a routing table.
type Route struct {
	Dst   netip.Prefix
	Table uint32 // 0 means the main table
	Type  uint8  // RouteUnicast (the zero value means it) or another type
	Link  int    // the output link's index, for unicast routes
}

func (r Route) message(typ, flags uint16) Message {
	t := r.Type
	if t == 0 {
		t = RouteUnicast
	}
	table := r.Table
	if table == 0 {
		table = unix.RT_TABLE_MAIN
	}
	h := make([]byte, unix.SizeofRtMsg)
	h[0] = family(r.Dst.Addr())
	h[1] = uint8(r.Dst.Bits())
	if table < 256 {
		h[4] = uint8(table)
	} else {
		h[4] = unix.RT_TABLE_COMPAT
	}
	h[5] = unix.RTPROT_STATIC
	h[6] = unix.RT_SCOPE_UNIVERSE
	if t == RouteUnicast && r.Link != 0 {
		h[6] = unix.RT_SCOPE_LINK
	}
	h[7] = t
	m := new(Builder).Bytes(h).U32(unix.RTA_TABLE, table)
	if r.Dst.Bits() > 0 {
		m.Addr(unix.RTA_DST, r.Dst.Addr())
	}
	if r.Link != 0 {
		m.U32(unix.RTA_OIF, uint32(r.Link))
	}
	return m.Message(typ, flags)
}

// RouteReplace adds r, replacing a route to the same destination in the
// same table.
func (c *Conn) RouteReplace(r Route) error {
	_, err := c.Execute(r.message(unix.RTM_NEWROUTE, FlagCreate|FlagReplace))
	return err
}

// RouteDel deletes r; a route that is not there is not an error.
func (c *Conn) RouteDel(r Route) error {
	_, err := c.Execute(r.message(unix.RTM_DELROUTE, 0))
	if errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOENT) {
		return nil
	}
	return err
}

// Routes returns the IPv4 and IPv6 routes of a table.
func (c *Conn) Routes(table uint32) ([]Route, error) {
	var out []Route
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		h := make([]byte, unix.SizeofRtMsg)
		h[0] = fam
		msgs, err := c.Execute(new(Builder).Bytes(h).Message(unix.RTM_GETROUTE, FlagDump))
		if err != nil {
			return nil, err
		}
		for _, m := range msgs {
			if r, ok := parseRoute(m); ok && r.Table == table {
				out = append(out, r)
			}
		}
	}
	return out, nil
}

func parseRoute(m Message) (Route, bool) {
	if m.Type != unix.RTM_NEWROUTE || len(m.Data) < unix.SizeofRtMsg {
		return Route{}, false
	}
	r := Route{Table: uint32(m.Data[4]), Type: m.Data[7]}
	bits := int(m.Data[1])
	var dst netip.Addr
	for _, a := range ParseAttrs(m.Data[unix.SizeofRtMsg:]) {
		switch a.Type {
		case unix.RTA_TABLE:
			if len(a.Data) == 4 {
				r.Table = binary.NativeEndian.Uint32(a.Data)
			}
		case unix.RTA_DST:
			dst, _ = netip.AddrFromSlice(a.Data)
		case unix.RTA_OIF:
			if len(a.Data) == 4 {
				r.Link = int(binary.NativeEndian.Uint32(a.Data))
			}
		}
	}
	if !dst.IsValid() {
		if m.Data[0] == unix.AF_INET {
			dst = netip.IPv4Unspecified()
		} else {
			dst = netip.IPv6Unspecified()
		}
	}
	p, err := dst.Prefix(bits)
	if err != nil {
		return Route{}, false
	}
	r.Dst = p
	return r, true
}

// Rule actions.
const (
	RuleToTable     = unix.FR_ACT_TO_TBL
	RuleUnreachable = unix.FR_ACT_UNREACHABLE
)

// Rule is a policy routing rule ("ip rule").
type Rule struct {
	IPv6       bool
	Priority   uint32
	Mark, Mask uint32 // firewall mark to match; Mask 0 matches any mark
	Table      uint32 // for RuleToTable
	Action     uint8  // RuleToTable (the zero value means it) or RuleUnreachable
}

func (r Rule) message(typ, flags uint16) Message {
	act := r.Action
	if act == 0 {
		act = RuleToTable
	}
	h := make([]byte, 12) // struct fib_rule_hdr
	h[0] = unix.AF_INET
	if r.IPv6 {
		h[0] = unix.AF_INET6
	}
	if r.Table < 256 {
		h[4] = uint8(r.Table)
	}
	h[7] = act
	m := new(Builder).Bytes(h).U32(unix.FRA_PRIORITY, r.Priority)
	if act == RuleToTable {
		m.U32(unix.FRA_TABLE, r.Table)
	}
	if r.Mask != 0 {
		m.U32(unix.FRA_FWMARK, r.Mark).U32(unix.FRA_FWMASK, r.Mask)
	}
	return m.Message(typ, flags)
}

// RuleAdd adds r; an identical rule already there is not an error.
func (c *Conn) RuleAdd(r Rule) error {
	_, err := c.Execute(r.message(unix.RTM_NEWRULE, FlagCreate|FlagExcl))
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	return err
}

// RuleDel deletes the rule matching r; a rule that is not there is not
// an error.
func (c *Conn) RuleDel(r Rule) error {
	_, err := c.Execute(r.message(unix.RTM_DELRULE, 0))
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) {
		return nil
	}
	return err
}

// Rules returns the IPv4 or IPv6 policy routing rules.
func (c *Conn) Rules(ipv6 bool) ([]Rule, error) {
	h := make([]byte, 12)
	h[0] = unix.AF_INET
	if ipv6 {
		h[0] = unix.AF_INET6
	}
	msgs, err := c.Execute(new(Builder).Bytes(h).Message(unix.RTM_GETRULE, FlagDump))
	if err != nil {
		return nil, err
	}
	var out []Rule
	for _, m := range msgs {
		if m.Type != unix.RTM_NEWRULE || len(m.Data) < 12 {
			continue
		}
		r := Rule{IPv6: m.Data[0] == unix.AF_INET6, Table: uint32(m.Data[4]), Action: m.Data[7]}
		for _, a := range ParseAttrs(m.Data[12:]) {
			if len(a.Data) != 4 {
				continue
			}
			v := binary.NativeEndian.Uint32(a.Data)
			switch a.Type {
			case unix.FRA_PRIORITY:
				r.Priority = v
			case unix.FRA_TABLE:
				r.Table = v
			case unix.FRA_FWMARK:
				r.Mark = v
			case unix.FRA_FWMASK:
				r.Mask = v
			}
		}
		out = append(out, r)
	}
	return out, nil
}
