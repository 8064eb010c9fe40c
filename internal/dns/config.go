package dns

import (
	"net/netip"
	"strings"

	"github.com/microlink-go/microlink/internal/tailcfg"
)

// The resolver's addresses, as in Tailscale.
var (
	IPv4 = netip.AddrFrom4([4]byte{100, 100, 100, 100})
	IPv6 = netip.MustParseAddr("fd7a:115c:a1e0::53")
)

// IsResolver reports whether ip is one of the resolver's addresses.
func IsResolver(ip netip.Addr) bool { ip = ip.Unmap(); return ip == IPv4 || ip == IPv6 }

// Names looks up tailnet nodes. Names are lower case; a name with dots
// is absolute, without its trailing dot.
type Names interface {
	// LookupName returns the addresses of the node with the given full
	// MagicDNS name, or short name when name has no dot.
	LookupName(name string) ([]netip.Addr, bool)
	// LookupAddr returns the full MagicDNS name (with its trailing dot)
	// of the node with address a.
	LookupAddr(a netip.Addr) (string, bool)
}

// Config is what the resolver knows of the tailnet. Suffixes and names
// are lower case and end with a dot.
type Config struct {
	// Names are the tailnet's nodes; nil answers no tailnet names.
	Names Names
	// Local are the suffixes answered here alone: a name under them that
	// is no node or extra record does not exist.
	Local []string
	// Extra are the netmap's extra records: name → addresses.
	Extra map[string][]netip.Addr
	// Upstream are the default resolvers; none means the host's.
	Upstream []netip.AddrPort
	// Routes are split-DNS routes: names under a suffix go to its
	// resolvers (longest suffix first); a suffix with none is Local.
	Routes map[string][]netip.AddrPort
}

// tailnet address ranges, for reverse lookups answered locally.
var (
	cgnat     = netip.MustParsePrefix("100.64.0.0/10")
	tailnetV6 = netip.MustParsePrefix("fd7a:115c:a1e0::/48")
)

// ConfigFromNetmap builds a Config from the netmap's DNS configuration and
// the self node's name (its domain is local). Resolver addresses that are
// not plain IP or IP:port (DNS over HTTPS or TLS) are skipped and
// returned, for the caller to log.
func ConfigFromNetmap(names Names, selfName string, dc *tailcfg.DNSConfig) (c Config, skipped []string) {
	c.Names = names
	addLocal := func(s string) {
		s = fqdn(s)
		if s != "." {
			for _, l := range c.Local {
				if l == s {
					return
				}
			}
			c.Local = append(c.Local, s)
		}
	}
	if _, dom, ok := strings.Cut(strings.ToLower(selfName), "."); ok && dom != "" && dom != "." {
		addLocal(dom)
	}
	if dc == nil {
		return c, nil
	}
	parse := func(rs []*tailcfg.Resolver) []netip.AddrPort {
		var out []netip.AddrPort
		for _, r := range rs {
			if r == nil {
				continue
			}
			if ap, ok := parseResolver(r.Addr); ok {
				out = append(out, ap)
			} else {
				skipped = append(skipped, r.Addr)
			}
		}
		return out
	}
	c.Upstream = parse(dc.Resolvers)
	if len(dc.Resolvers) == 0 {
		for _, a := range dc.Nameservers {
			c.Upstream = append(c.Upstream, netip.AddrPortFrom(a, 53))
		}
	}
	for suffix, rs := range dc.Routes {
		if len(rs) == 0 {
			addLocal(suffix)
			continue
		}
		if c.Routes == nil {
			c.Routes = make(map[string][]netip.AddrPort)
		}
		if ap := parse(rs); len(ap) > 0 {
			c.Routes[fqdn(suffix)] = ap
		}
	}
	for _, rec := range dc.ExtraRecords {
		if rec.Type != "" && rec.Type != "A" && rec.Type != "AAAA" {
			continue
		}
		ip, err := netip.ParseAddr(rec.Value)
		if err != nil || (rec.Type == "A" && !ip.Is4()) || (rec.Type == "AAAA" && !ip.Is6()) {
			continue
		}
		if c.Extra == nil {
			c.Extra = make(map[string][]netip.Addr)
		}
		n := fqdn(rec.Name)
		c.Extra[n] = append(c.Extra[n], ip.Unmap())
	}
	return c, skipped
}

// parseResolver reads "ip" or "ip:port".
func parseResolver(s string) (netip.AddrPort, bool) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap, true
	}
	if ip, err := netip.ParseAddr(s); err == nil && ip.Zone() == "" {
		return netip.AddrPortFrom(ip.Unmap(), 53), true
	}
	return netip.AddrPort{}, false
}

// fqdn lower-cases name and gives it one trailing dot.
func fqdn(name string) string {
	return strings.TrimSuffix(strings.ToLower(name), ".") + "."
}

// under reports whether name (absolute) is suffix or below it.
func under(name, suffix string) bool {
	return name == suffix || strings.HasSuffix(name, "."+suffix) || suffix == "."
}

// route returns the resolvers for name: the longest matching split-DNS
// route, else the defaults. local is set when name must be answered here.
func (c *Config) route(name string) (servers []netip.AddrPort, local bool) {
	best := -1
	for _, l := range c.Local {
		if under(name, l) && len(l) > best {
			best, local = len(l), true
		}
	}
	for suffix, rs := range c.Routes {
		if under(name, suffix) && len(suffix) > best {
			best, servers, local = len(suffix), rs, false
		}
	}
	if local || best >= 0 {
		return servers, local
	}
	return c.Upstream, false
}
