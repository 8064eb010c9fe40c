package packet

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
)

var (
	all4 = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	all6 = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
)

// ParseSrc parses an address set as written in the SrcIPs and DstPorts.IP
// fields of a tailcfg.FilterRule:
//
//   - "*": every IPv4 and IPv6 address
//   - a CIDR prefix, "100.64.0.0/10", whose host bits must be zero
//   - an address, "100.101.102.103" or "fd7a:115c:a1e0::1"
//   - an inclusive range of addresses of one family, "10.0.0.1-10.0.0.9"
//   - "cap:<capability>", a peer capability; it names no addresses, and
//     ParseSrc returns none and no error
func ParseSrc(s string) ([]netip.Prefix, error) {
	if s == "*" {
		return []netip.Prefix{all4, all6}, nil
	}
	if strings.HasPrefix(s, "cap:") {
		return nil, nil
	}
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, err
		}
		if p != p.Masked() {
			return nil, fmt.Errorf("packet: %s has host bits set", s)
		}
		return []netip.Prefix{p}, nil
	}
	if lo, hi, ok := strings.Cut(s, "-"); ok {
		a, err := parseAddr(lo)
		if err != nil {
			return nil, err
		}
		b, err := parseAddr(hi)
		if err != nil {
			return nil, err
		}
		return rangePrefixes(a, b)
	}
	a, err := parseAddr(s)
	if err != nil {
		return nil, err
	}
	return []netip.Prefix{netip.PrefixFrom(a, a.BitLen())}, nil
}

func parseAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, err
	}
	if a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("packet: address %s has a zone", s)
	}
	return a, nil
}

// rangePrefixes returns the fewest prefixes covering lo through hi.
func rangePrefixes(lo, hi netip.Addr) ([]netip.Prefix, error) {
	if lo.Is4() != hi.Is4() || lo.Is4In6() != hi.Is4In6() || hi.Less(lo) {
		return nil, fmt.Errorf("packet: invalid address range %s-%s", lo, hi)
	}
	var out []netip.Prefix
	for {
		// The largest prefix starting at lo that ends at or before hi.
		bits := lo.BitLen()
		for bits > 0 {
			p := netip.PrefixFrom(lo, bits-1)
			if p.Masked().Addr() != lo || hi.Less(lastAddr(p)) {
				break
			}
			bits--
		}
		p := netip.PrefixFrom(lo, bits)
		out = append(out, p)
		last := lastAddr(p)
		if last == hi {
			return out, nil
		}
		lo = last.Next()
	}
}

// lastAddr returns the highest address in p.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Addr().As16()
	hiw, low := binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(a[8:])
	host := p.Addr().BitLen() - p.Bits() // host bits, counted from the end
	switch {
	case host >= 128:
		hiw, low = ^uint64(0), ^uint64(0)
	case host > 64:
		low = ^uint64(0)
		hiw |= 1<<(host-64) - 1
	case host == 64:
		low = ^uint64(0)
	default:
		low |= 1<<host - 1
	}
	binary.BigEndian.PutUint64(a[:8], hiw)
	binary.BigEndian.PutUint64(a[8:], low)
	r := netip.AddrFrom16(a)
	if p.Addr().Is4() {
		return r.Unmap()
	}
	return r
}

// Dst is the text form of a rule destination, as in tailcfg.NetPortRange:
// an address set in the syntax of ParseSrc and an inclusive port range.
type Dst struct {
	IP          string
	First, Last uint16
}

// ParseRule builds a Rule from the fields of a tailcfg.FilterRule: SrcIPs,
// DstPorts and IPProto. Protocol numbers outside 0-255 are left out. Like
// the reference client, it keeps the parts it understands when some fail:
// the returned Rule is usable even when err is not nil, and err describes
// the first failure.
func ParseRule(srcIPs []string, dsts []Dst, ipProto []int) (Rule, error) {
	var r Rule
	var firstErr error
	fail := func(err error) {
		if firstErr == nil {
			firstErr = err
		}
	}
	for _, s := range srcIPs {
		ps, err := ParseSrc(s)
		if err != nil {
			fail(err)
			continue
		}
		r.Srcs = append(r.Srcs, ps...)
	}
	for _, d := range dsts {
		if strings.HasPrefix(d.IP, "cap:") {
			fail(fmt.Errorf("packet: capability %q as a destination", d.IP))
			continue
		}
		ps, err := ParseSrc(d.IP)
		if err != nil {
			fail(err)
			continue
		}
		for _, p := range ps {
			r.Dsts = append(r.Dsts, PortRange{Net: p, First: d.First, Last: d.Last})
		}
	}
	if len(ipProto) > 0 {
		for _, n := range ipProto {
			if n >= 0 && n <= 255 {
				r.Protos = append(r.Protos, Proto(n))
			}
		}
		if len(r.Protos) == 0 {
			// Only invalid protocols: the rule matches nothing,
			// rather than the defaults.
			r.Dsts = nil
		}
	}
	return r, firstErr
}
