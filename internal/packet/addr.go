package packet

import "net/netip"

var (
	cgnatRange    = netip.MustParsePrefix("100.64.0.0/10")
	chromeOSRange = netip.MustParsePrefix("100.115.92.0/23")
	ulaRange      = netip.MustParsePrefix("fd7a:115c:a1e0::/48")
	serviceIPv4   = netip.MustParseAddr("100.100.100.100")
	serviceIPv6   = netip.MustParseAddr("fd7a:115c:a1e0::53")
)

// CGNATRange returns 100.64.0.0/10, the range Tailscale IPv4 addresses come from.
func CGNATRange() netip.Prefix { return cgnatRange }

// ChromeOSVMRange returns 100.115.92.0/23, the part of CGNATRange that
// ChromeOS uses for its virtual machines and Tailscale leaves alone.
func ChromeOSVMRange() netip.Prefix { return chromeOSRange }

// ULARange returns fd7a:115c:a1e0::/48, the range Tailscale IPv6 addresses
// come from.
func ULARange() netip.Prefix { return ulaRange }

// ServiceIPv4 returns 100.100.100.100, the address of the node's own
// services (MagicDNS).
func ServiceIPv4() netip.Addr { return serviceIPv4 }

// ServiceIPv6 returns fd7a:115c:a1e0::53, the IPv6 address of the node's own
// services (MagicDNS).
func ServiceIPv6() netip.Addr { return serviceIPv6 }

// IsTailscaleIP reports whether a is in the ranges Tailscale assigns to
// nodes: 100.64.0.0/10 except 100.115.92.0/23, or fd7a:115c:a1e0::/48.
func IsTailscaleIP(a netip.Addr) bool {
	if a.Is4() {
		return cgnatRange.Contains(a) && !chromeOSRange.Contains(a)
	}
	return ulaRange.Contains(a)
}

// IsServiceIP reports whether a is one of the node-local service addresses.
func IsServiceIP(a netip.Addr) bool {
	return a == serviceIPv4 || a == serviceIPv6
}
