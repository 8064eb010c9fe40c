// Package tcp is a small, memory-bounded TCP (RFC 9293) for the node's
// userspace IP endpoint, built for the paths of the internet: tens to
// hundreds of milliseconds, loss, reordering and relays.
//
// A Stack owns connections and listeners on the node's tailnet addresses.
// Inbound segments come from the tunnel after its packet filter; outbound
// segments are complete IPv4 or IPv6 packets handed to Config.Output.
//
// Sending: the MSS, window scale and SACK options; loss recovery after RFC
// 6675 with a scoreboard of every segment in flight and a pipe estimate,
// kept across a retransmission timeout; loss detection by RACK with tail
// loss probes (RFC 8985); proportional rate reduction (RFC 6937); undo of
// recoveries that D-SACKs show were spurious; CUBIC (RFC 9438, the default)
// or NewReno congestion control with byte counting (RFC 3465), a window
// that grows only while it limits the sender and survives idleness (RFC
// 7661), and pacing; an RFC 6298 retransmission timer, with the connection
// failing after RetransmitTimeout without progress; zero-window probes
// that leave the congestion state alone. Receiving: out-of-order data kept
// within the window and reported in SACK blocks, D-SACKs for duplicates,
// delayed ACKs, keep-alives. No timestamps option: each segment's send
// time gives the RTT samples, D-SACK the undo, and WireGuard's replay
// window the protection against old duplicates that PAWS would give.
//
// Memory is bounded: send and receive buffers grow with the measured
// bandwidth-delay product up to a per-connection limit, inside a budget
// for the whole stack, shrink back when idle, and hold memory (16 KiB
// chunks) only for the data in them. Connections, half-open connections
// and each listener's backlog are capped, SYN cookies answer a SYN flood,
// TIME-WAIT keeps only a four-tuple, and packets are built in buffers from
// a bounded pool. A connection owns one timer and no goroutine; Conn
// implements net.Conn and Listener net.Listener.
package tcp
