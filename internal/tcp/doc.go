// Package tcp is a small, memory-bounded TCP (RFC 9293) for the node's
// userspace IP endpoint.
//
// A Stack owns connections and listeners on the node's tailnet addresses.
// Inbound segments come from the tunnel after its packet filter; outbound
// segments are complete IPv4 or IPv6 packets handed to Config.Output. The
// stack implements the MSS and window scale options, retransmission with an
// RFC 6298 timer and a cap on retries, fast retransmit and NewReno
// congestion control with loss recovery guided by the peer's SACK blocks,
// buffering of out-of-order data within the receive window (reported to
// the peer in SACK blocks), zero-window probing,
// keep-alive probes and resets for segments to closed ports.
//
// Memory is bounded: each connection has fixed send and receive buffers,
// the number of connections and each listener's backlog are capped, and
// packets are built in buffers from a bounded pool. A connection owns one
// timer and no goroutine; Conn implements net.Conn and Listener
// net.Listener.
package tcp
