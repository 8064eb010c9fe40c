package packet

import (
	"net/netip"
)

// Verdict is a packet filter's decision.
type Verdict uint8

// Verdicts. The zero Verdict is Drop.
const (
	Drop Verdict = iota
	Accept
)

func (v Verdict) String() string {
	if v == Accept {
		return "Accept"
	}
	return "Drop"
}

// PortRange is a destination of a Rule: the addresses in Net, ports First
// through Last inclusive.
type PortRange struct {
	Net         netip.Prefix
	First, Last uint16
}

// allPorts reports whether r covers every port.
func (r PortRange) allPorts() bool { return r.First == 0 && r.Last == 0xffff }

// Rule allows packets from any address in Srcs to the destinations in Dsts,
// for the protocols in Protos. Empty Protos means TCP, UDP, ICMPv4 and
// ICMPv6, as for a tailcfg.FilterRule with an empty IPProto.
type Rule struct {
	Srcs   []netip.Prefix
	Dsts   []PortRange
	Protos []Proto
}

// defaultProtos are the protocols of a Rule that names none.
var defaultProtos = []Proto{ProtoTCP, ProtoUDP, ProtoICMPv4, ProtoICMPv6}

// protoSet is a set of IP protocol numbers.
type protoSet [4]uint64

func (s *protoSet) add(p Proto)      { s[p>>6] |= 1 << (p & 63) }
func (s *protoSet) has(p Proto) bool { return s[p>>6]&(1<<(p&63)) != 0 }
func (s *protoSet) addAll(ps []Proto) {
	for _, p := range ps {
		s.add(p)
	}
}

// match is a Rule restricted to one address family.
type match struct {
	protos protoSet
	srcs   []netip.Prefix
	dsts   []PortRange
}

// Filter is a packet filter for packets arriving from peers. Its methods may
// be called concurrently.
//
// TSMP packets are meant to be handled before the filter: the caller
// answers pings and consumes the other messages itself. The filter accepts
// the TSMP packets it sees, as the reference client does.
type Filter struct {
	allowAll       bool
	local4, local6 []netip.Prefix
	m4, m6         []match
	flows          *flowCache
}

// NewFilter returns a filter that accepts packets to localAddrs allowed by
// rules, as well as replies: ICMP echo replies and errors, TCP segments
// other than an opening SYN, and UDP and SCTP packets of flows recorded by
// Outbound.
//
// An empty rule set (a control server's empty packet filter) thus still
// lets replies in; DenyAll lets nothing in.
func NewFilter(rules []Rule, localAddrs []netip.Prefix) *Filter {
	return NewFilterFrom(nil, rules, localAddrs)
}

// NewFilterFrom is NewFilter, but the new filter shares the recorded
// outbound flows with prev, if prev is not nil, so that replacing the rules
// does not cut off replies to flows already open.
func NewFilterFrom(prev *Filter, rules []Rule, localAddrs []netip.Prefix) *Filter {
	f := &Filter{}
	if prev != nil && prev.flows != nil {
		f.flows = prev.flows
	} else {
		f.flows = newFlowCache(maxFlows)
	}
	for _, p := range localAddrs {
		if p.Addr().Is4() {
			f.local4 = append(f.local4, p.Masked())
		} else if p.IsValid() {
			f.local6 = append(f.local6, p.Masked())
		}
	}
	f.m4 = family(rules, netip.Addr.Is4)
	f.m6 = family(rules, netip.Addr.Is6)
	return f
}

// family returns the matches for the rules' sources and destinations for
// which is says true, leaving out rules with none of either.
func family(rules []Rule, is func(netip.Addr) bool) []match {
	var ms []match
	for _, r := range rules {
		var m match
		for _, s := range r.Srcs {
			if is(s.Addr()) {
				m.srcs = append(m.srcs, s.Masked())
			}
		}
		for _, d := range r.Dsts {
			if is(d.Net.Addr()) {
				d.Net = d.Net.Masked()
				m.dsts = append(m.dsts, d)
			}
		}
		if len(m.srcs) == 0 || len(m.dsts) == 0 {
			continue
		}
		if len(r.Protos) == 0 {
			m.protos.addAll(defaultProtos)
		} else {
			m.protos.addAll(r.Protos)
		}
		ms = append(ms, m)
	}
	return ms
}

// AllowAll returns a filter that accepts every well-formed packet. It is
// meant for tests and trusted setups only.
func AllowAll() *Filter {
	return &Filter{allowAll: true, flows: newFlowCache(maxFlows)}
}

// DenyAll returns a filter that accepts no packet at all, not even replies.
func DenyAll() *Filter {
	return &Filter{flows: newFlowCache(maxFlows)}
}

// linkLocalMetadata is the cloud metadata and DNS address, the one
// link-local destination the filter lets through.
var linkLocalMetadata = netip.AddrFrom4([4]byte{169, 254, 169, 254})

// pre returns the verdict for p common to both directions, if there is
// one.
func (f *Filter) pre(p *Parsed) (Verdict, bool) {
	if p.Version == 0 || len(p.b) < IPv4HeaderLen {
		return Drop, true
	}
	if p.Dst.IsMulticast() {
		return Drop, true
	}
	if p.Dst.IsLinkLocalUnicast() && p.Dst != linkLocalMetadata {
		return Drop, true
	}
	if p.Fragment {
		// Later fragments carry no ports to judge; they are useless
		// without the first, which the filter did judge.
		return Accept, true
	}
	return Drop, false
}

// Inbound decides whether the local stack may receive p, a packet that
// arrived from a peer.
func (f *Filter) Inbound(p *Parsed) Verdict {
	if f.allowAll {
		if p.Version == 0 {
			return Drop
		}
		return Accept
	}
	if len(f.local4) == 0 && len(f.local6) == 0 {
		return Drop
	}
	if v, ok := f.pre(p); ok {
		return v
	}
	local, ms := f.local4, f.m4
	if p.Version == 6 {
		local, ms = f.local6, f.m6
	}
	if !containsAddr(local, p.Dst) {
		return Drop
	}
	switch p.Proto {
	case ProtoICMPv4, ProtoICMPv6:
		if !p.isICMP() {
			break
		}
		if p.IsEchoReply() || p.IsICMPError() {
			return Accept
		}
		if matchAddrs(ms, p) {
			return Accept
		}
		return Drop
	case ProtoTCP:
		if !p.IsTCPSyn() {
			return Accept
		}
		return verdict(matchPort(ms, p))
	case ProtoUDP, ProtoSCTP:
		if f.flows.has(flowOf(p)) {
			return Accept
		}
		return verdict(matchPort(ms, p))
	case ProtoTSMP:
		return Accept
	}
	return verdict(matchAllPorts(ms, p))
}

// Outbound records p, a packet the node sends to a peer, so that replies
// to its UDP or SCTP flow are accepted by Inbound. It returns Drop for
// packets no peer should get: malformed, multicast or link-local.
func (f *Filter) Outbound(p *Parsed) Verdict {
	if v, ok := f.pre(p); ok {
		return v
	}
	switch p.Proto {
	case ProtoUDP, ProtoSCTP:
		if !f.allowAll {
			f.flows.add(flow{proto: p.Proto, src: p.DstAddrPort(), dst: p.SrcAddrPort()})
		}
	}
	return Accept
}

func verdict(ok bool) Verdict {
	if ok {
		return Accept
	}
	return Drop
}

func containsAddr(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// matchPort reports whether a match allows p's protocol from its source to
// its destination address and port.
func matchPort(ms []match, p *Parsed) bool {
	for i := range ms {
		m := &ms[i]
		if !m.protos.has(p.Proto) || !containsAddr(m.srcs, p.Src) {
			continue
		}
		for _, d := range m.dsts {
			if d.Net.Contains(p.Dst) && p.DstPort >= d.First && p.DstPort <= d.Last {
				return true
			}
		}
	}
	return false
}

// matchAddrs reports whether a match allows p's source to reach some port
// of its destination, by any protocol. ICMP echo requests are judged so.
func matchAddrs(ms []match, p *Parsed) bool {
	for i := range ms {
		m := &ms[i]
		if !containsAddr(m.srcs, p.Src) {
			continue
		}
		for _, d := range m.dsts {
			if d.Net.Contains(p.Dst) {
				return true
			}
		}
	}
	return false
}

// matchAllPorts reports whether a match allows p's protocol from its
// source to every port of its destination. Protocols without ports are
// judged so.
func matchAllPorts(ms []match, p *Parsed) bool {
	for i := range ms {
		m := &ms[i]
		if !m.protos.has(p.Proto) || !containsAddr(m.srcs, p.Src) {
			continue
		}
		for _, d := range m.dsts {
			if d.allPorts() && d.Net.Contains(p.Dst) {
				return true
			}
		}
	}
	return false
}
