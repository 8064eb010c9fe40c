package microlink

import (
	"fmt"
	"net/netip"
	"time"
)

// State is where a Node is in its life.
type State int

// The states of a Node, in the order a successful start goes through them.
const (
	// Stopped: not started, or closed.
	Stopped State = iota
	// Connecting: talking to the control server (registering, or
	// reconnecting after a failure).
	Connecting
	// NeedsLogin: waiting for a person to visit the login URL.
	NeedsLogin
	// NeedsApproval: registered, but an administrator must approve the
	// device before it may join.
	NeedsApproval
	// Connected: registered, the network map has arrived and control knows
	// the node's home DERP region, so its peers can reach it.
	Connected
)

// String returns the state's name, such as "Connected".
func (s State) String() string {
	switch s {
	case Stopped:
		return "Stopped"
	case Connecting:
		return "Connecting"
	case NeedsLogin:
		return "NeedsLogin"
	case NeedsApproval:
		return "NeedsApproval"
	case Connected:
		return "Connected"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Event tells a Watch callback what changed.
type Event struct {
	// State is the node's state after the change.
	State State
	// AuthURL is set while State is NeedsLogin.
	AuthURL string
	// PeersChanged is true when the peer list or a peer's details changed.
	PeersChanged bool
	// Err is the last control error while the node is retrying.
	Err error
}

// Peer describes another node of the tailnet as this node sees it.
type Peer struct {
	Name      string       // short MagicDNS name, such as "laptop"
	FQDN      string       // full MagicDNS name without the trailing dot
	Hostname  string       // the host name the peer reports
	StableID  string       // control's stable node ID
	Addresses []netip.Addr // tailnet addresses (IPv4 first)
	// Routes are the subnet and exit routes control lets the peer carry
	// for this node (its WireGuard allowed IPs beyond its own addresses).
	Routes   []netip.Prefix
	UserID   int64    // the owner, as WhoIs details it
	Tags     []string // ACL tags
	OS       string
	Online   bool
	Expired  bool      // the peer's key has expired: it cannot be reached
	LastSeen time.Time // zero if unknown
	NodeKey  string    // "nodekey:…"

	// Path is how packets reach the peer now: "direct" (Endpoint is set),
	// "derp" (DERPRegion is set) or "" when nothing was sent yet.
	Path       string
	Endpoint   netip.AddrPort
	DERPRegion int
	HomeDERP   int           // the peer's home DERP region
	Latency    time.Duration // last measured round trip; 0 if none yet

	RxBytes, TxBytes uint64    // WireGuard payload bytes
	LastHandshake    time.Time // zero if no session yet

	// AcceptedRoutes are those of Routes this node sends through the
	// peer (Config.AcceptRoutes, Config.ExitNode).
	AcceptedRoutes []netip.Prefix
	ExitNodeOption bool // the peer offers itself as an exit node
	ExitNode       bool // the peer is this node's exit node
}

// PingType selects how Ping reaches a peer. Kinds combine with |, to send
// several at once and take the first answer; the zero value means
// PingDisco.
type PingType int

const (
	// PingDisco sends a disco ping: it proves the path (direct or DERP)
	// without involving WireGuard, like "tailscale ping".
	PingDisco PingType = 1 << iota
	// PingTSMP sends a TSMP ping through WireGuard, answered by the peer's
	// Tailscale client, like "tailscale ping --tsmp".
	PingTSMP
	// PingICMP sends an ICMP echo request through WireGuard, answered by the
	// peer's IP stack, like "tailscale ping --icmp".
	PingICMP
)

// pingAll is every kind of ping.
const pingAll = PingDisco | PingTSMP | PingICMP

// String returns "disco", "TSMP" or "ICMP", or for several kinds their
// names joined with "|".
func (t PingType) String() string {
	if t == 0 {
		t = PingDisco
	}
	if t&^pingAll != 0 {
		return fmt.Sprintf("PingType(%d)", int(t))
	}
	s := ""
	for _, k := range [...]struct {
		t    PingType
		name string
	}{{PingDisco, "disco"}, {PingTSMP, "TSMP"}, {PingICMP, "ICMP"}} {
		if t&k.t != 0 {
			if s != "" {
				s += "|"
			}
			s += k.name
		}
	}
	return s
}

// PingResult is the answer to one Ping.
type PingResult struct {
	Type     PingType
	Peer     string // short name of the peer that answered
	PeerIP   netip.Addr
	Latency  time.Duration
	Endpoint netip.AddrPort // the direct path the answer came on, if any
	// DERPRegion is the DERP region the answer came through, if not direct.
	DERPRegion int
}

// Stats are a node's counters since it started.
type Stats struct {
	PacketsIn      uint64 `json:"packetsIn"`      // WireGuard data packets
	PacketsOut     uint64 `json:"packetsOut"`     // WireGuard data packets
	BytesIn        uint64 `json:"bytesIn"`        // WireGuard payload bytes
	BytesOut       uint64 `json:"bytesOut"`       // WireGuard payload bytes
	Handshakes     uint64 `json:"handshakes"`     // completed WireGuard handshakes
	Dropped        uint64 `json:"dropped"`        // packets dropped by the filter or for errors
	TCPConns       int    `json:"tcpConns"`       // TCP connections in any state but TIME-WAIT
	TCPHalfOpen    int    `json:"tcpHalfOpen"`    // TCP connections from peers whose handshake is not complete
	TCPRetransmits uint64 `json:"tcpRetransmits"` // TCP segments sent again after a loss
	TCPSYNCookies  uint64 `json:"tcpSynCookies"`  // SYN-ACKs sent as SYN cookies, when too many handshakes were open
	Peers          int    `json:"peers"`          // peers in the netmap

	// WireGuard messages (data, keep-alives, handshakes) by the way they
	// went: over a direct UDP path or relayed through DERP. Bytes are
	// whole WireGuard messages, overhead included. While a direct path is
	// being proven a message goes both ways and counts on both.
	DirectPacketsIn  uint64 `json:"directPacketsIn"`
	DirectPacketsOut uint64 `json:"directPacketsOut"`
	DirectBytesIn    uint64 `json:"directBytesIn"`
	DirectBytesOut   uint64 `json:"directBytesOut"`
	DERPPacketsIn    uint64 `json:"derpPacketsIn"`
	DERPPacketsOut   uint64 `json:"derpPacketsOut"`
	DERPBytesIn      uint64 `json:"derpBytesIn"`
	DERPBytesOut     uint64 `json:"derpBytesOut"`

	MapUpdates uint64 `json:"mapUpdates"` // netmap messages from control (whole or delta; not keep-alives)

	// RegisterRequests counts the register requests sent to control:
	// logins, key rotations, interactive follow-ups and logouts. A node
	// that reconnects to control without logging in again does not add
	// to it.
	RegisterRequests uint64 `json:"registerRequests"`
}

// RegistrationError is returned by Start when the control server refuses to
// register the node, for example for an invalid or expired auth key.
type RegistrationError struct {
	Reason string // the server's words
}

func (e *RegistrationError) Error() string {
	return "microlink: the control server refused to register this node: " + e.Reason
}
