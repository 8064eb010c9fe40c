// Package tunnel is the node's own end of the tunnel: a tiny userspace IP
// endpoint that sits on top of WireGuard.
//
// Inbound IP packets from WireGuard are parsed once and then either answered
// in place (TSMP pings, ICMP echo requests), matched to a ping this node sent
// (TSMP pongs, echo replies), delivered to a UDP socket, or handed to the TCP
// stack (package tcp). The packet filter from the netmap decides what may
// come in; TSMP is handled before it, as the Tailscale client does.
// Outbound, UDP datagrams and TCP segments are wrapped in IPv4 or IPv6
// headers from the node's tailnet address and handed to WireGuard.
package tunnel
