// Package netmap holds a node's live view of its tailnet: the self node, the
// peers, the DERP map, the packet filter and the DNS configuration, kept up
// to date by applying the full and delta messages of a control map stream.
//
// Peers are stored in a compact form (Peer) rather than as wire nodes, and
// lookups by node key, disco key, address and MagicDNS name use indexes that
// are maintained incrementally, so a delta touching one peer costs work for
// that peer only, even in a tailnet with tens of thousands of nodes.
//
// A Map is safe for concurrent use. Apply and ApplyJSON take a write lock;
// every reader returns copies, so a caller never sees a half-applied message.
// Slices inside returned values (addresses, endpoints, filter rules) are
// shared with the Map and must not be modified.
package netmap
