// Package netmap holds a node's live view of its tailnet: the self node, the
// peers, the DERP map, the packet filter and the DNS configuration, kept up
// to date by applying the full and delta messages of a control map stream.
//
// A Decoder reads each message as a stream and decodes the nodes of its
// peer lists straight into the Map's packed form (about 400 bytes a peer,
// indexes included), so that the netmap of a large tailnet never exists in
// memory as JSON text or as wire structures. Lookups by address and
// MagicDNS name use indexes that are maintained incrementally, so a delta
// touching one peer costs work for that peer only, even in a tailnet with
// tens of thousands of nodes.
//
// A Map is safe for concurrent use. Apply takes a write lock; every reader
// returns copies, so a caller never sees a half-applied message. Readers
// build each Peer they return from the packed form; slices inside returned
// values that are not peers' (filter rules, DNS configuration) are shared
// with the Map and must not be modified.
package netmap
