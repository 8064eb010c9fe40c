// Package dns is MagicDNS: the resolver a tailnet node answers at
// 100.100.100.100 and fd7a:115c:a1e0::53.
//
// It answers A and AAAA queries for tailnet names (short names and full
// names under the tailnet's domain), the netmap's extra records, and PTR
// queries for tailnet addresses; every other name is forwarded to the
// resolvers of the netmap's DNS configuration, honouring its split-DNS
// routes, or to the host's resolvers when control names none. Queries
// come over UDP (with EDNS and truncation) or TCP (length-prefixed);
// malformed ones get FORMERR, or are dropped when not even the header
// can be read. Messages are parsed and built with
// golang.org/x/net/dns/dnsmessage.
package dns
