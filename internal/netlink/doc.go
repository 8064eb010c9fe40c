// Package netlink is a small client of the Linux kernel's netlink sockets:
// requests with their acknowledgements, dumps, and the attribute encoding
// that rtnetlink (addresses, routes, rules, links) and nf_tables share.
// It holds what the node needs to set up a TUN device, policy routing and
// NAT without the ip and nft commands. It exists only on Linux.
package netlink
