// Package packet parses and builds the IP packets a node exchanges with its
// peers inside WireGuard, and filters inbound packets by the tailnet's access
// rules.
//
// Parsed.Decode reads IPv4 and IPv6 packets (with UDP, TCP, ICMP and TSMP
// payloads) without allocating. The Build functions and EchoReply write
// packets into buffers the caller provides, also without allocating. TSMP,
// the Tailscale Message Protocol, is carried as IP protocol 99 and is used
// for pings that bypass the peer's IP stack.
//
// Filter decides which inbound packets reach the local stack. It follows the
// rules of the reference client: the destination must be one of the node's
// addresses, ICMP echo replies and errors always pass, echo requests pass
// when the source may reach some port of the destination, TCP segments other
// than an opening SYN pass, and UDP replies to flows the node started pass.
package packet
