package dns

import (
	"net/netip"
	"strconv"
	"strings"

	"golang.org/x/net/dns/dnsmessage"
)

// answerLocal answers qq from the tailnet's names, extra records and
// reverse zones. ok is false when the name is not the tailnet's to answer.
func (r *Resolver) answerLocal(cfg *Config, qq *query) (ans []dnsmessage.Resource, rcode dnsmessage.RCode, ok bool) {
	if qq.q.Class != dnsmessage.ClassINET && qq.q.Class != dnsmessage.ClassANY {
		return nil, 0, false
	}
	name := qq.name
	if ip, isRev := reverseAddr(name); isRev {
		if !cgnat.Contains(ip) && !tailnetV6.Contains(ip) {
			return nil, 0, false
		}
		target, found := "", false
		if cfg.Names != nil {
			target, found = cfg.Names.LookupAddr(ip)
		}
		if !found {
			return nil, dnsmessage.RCodeNameError, true
		}
		if qq.q.Type != dnsmessage.TypePTR && qq.q.Type != dnsmessage.TypeALL {
			return nil, dnsmessage.RCodeSuccess, true
		}
		tn, err := dnsmessage.NewName(fqdn(target))
		if err != nil {
			return nil, dnsmessage.RCodeServerFailure, true
		}
		return []dnsmessage.Resource{{
			Header: dnsmessage.ResourceHeader{Name: qq.q.Name, Type: dnsmessage.TypePTR, Class: dnsmessage.ClassINET, TTL: ttl},
			Body:   &dnsmessage.PTRResource{PTR: tn},
		}}, dnsmessage.RCodeSuccess, true
	}
	addrs, found := r.lookupLocal(cfg, name)
	if !found {
		if _, local := cfg.route(name); local {
			return nil, dnsmessage.RCodeNameError, true
		}
		return nil, 0, false
	}
	for _, a := range addrs {
		h := dnsmessage.ResourceHeader{Name: qq.q.Name, Class: dnsmessage.ClassINET, TTL: ttl}
		switch {
		case a.Is4() && (qq.q.Type == dnsmessage.TypeA || qq.q.Type == dnsmessage.TypeALL):
			h.Type = dnsmessage.TypeA
			ans = append(ans, dnsmessage.Resource{Header: h, Body: &dnsmessage.AResource{A: a.As4()}})
		case a.Is6() && (qq.q.Type == dnsmessage.TypeAAAA || qq.q.Type == dnsmessage.TypeALL):
			h.Type = dnsmessage.TypeAAAA
			ans = append(ans, dnsmessage.Resource{Header: h, Body: &dnsmessage.AAAAResource{AAAA: a.As16()}})
		}
	}
	return ans, dnsmessage.RCodeSuccess, true
}

// lookupLocal returns the tailnet addresses of an absolute name: a node's
// (by full or short name) and the extra records'.
func (r *Resolver) lookupLocal(cfg *Config, name string) ([]netip.Addr, bool) {
	var addrs []netip.Addr
	found := false
	if cfg.Names != nil {
		if a, ok := cfg.Names.LookupName(strings.TrimSuffix(name, ".")); ok {
			addrs, found = append(addrs, a...), true
		}
	}
	if a, ok := cfg.Extra[name]; ok {
		addrs, found = append(addrs, a...), true
	}
	return addrs, found
}

// reverseAddr parses a reverse-lookup name (d.c.b.a.in-addr.arpa. or the
// 32 nibbles of ip6.arpa.).
func reverseAddr(name string) (netip.Addr, bool) {
	switch {
	case strings.HasSuffix(name, ".in-addr.arpa."):
		labels := strings.Split(strings.TrimSuffix(name, ".in-addr.arpa."), ".")
		if len(labels) != 4 {
			return netip.Addr{}, false
		}
		var b [4]byte
		for i, l := range labels {
			v, err := strconv.ParseUint(l, 10, 8)
			if err != nil || (len(l) > 1 && l[0] == '0') {
				return netip.Addr{}, false
			}
			b[3-i] = byte(v)
		}
		return netip.AddrFrom4(b), true
	case strings.HasSuffix(name, ".ip6.arpa."):
		labels := strings.Split(strings.TrimSuffix(name, ".ip6.arpa."), ".")
		if len(labels) != 32 {
			return netip.Addr{}, false
		}
		var b [16]byte
		for i, l := range labels {
			if len(l) != 1 {
				return netip.Addr{}, false
			}
			v, err := strconv.ParseUint(l, 16, 8)
			if err != nil {
				return netip.Addr{}, false
			}
			pos := 31 - i
			if pos%2 == 0 {
				b[pos/2] |= byte(v) << 4
			} else {
				b[pos/2] |= byte(v)
			}
		}
		return netip.AddrFrom16(b), true
	}
	return netip.Addr{}, false
}
