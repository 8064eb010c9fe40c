// Package router makes the node a subnet router and exit node for the
// tailnet: it carries traffic between peers and the networks the node
// advertises (Config.AdvertiseRoutes).
//
// In TUN mode the host's kernel does the work: Kernel turns on IP
// forwarding and, unless told not to, masquerades (SNAT) the traffic it
// forwards from the TUN device, so that hosts on the advertised networks
// answer the router's own address and need no route back to the tailnet.
// The masquerade rule lives in nftables tables named "microlink" (ip and
// ip6 families), written through the kernel's nf_tables netlink
// interface: no nft or iptables command is needed. A kernel without
// nf_tables NAT makes Start fail with ErrNoNftables; the node then runs
// only with SNAT turned off (and a route back on the LAN).
//
// In userspace mode (no root, containers) Relay terminates the peers'
// TCP connections and UDP flows to advertised networks in the node and
// opens ordinary sockets of the host to the destination, and answers
// ICMP echo through the host's unprivileged ICMP sockets, as tailscaled's
// netstack does.
package router
