package derp

import (
	"net/netip"
	"time"

	"github.com/microlink-go/microlink/internal/key"
)

// A Message is something Client.Recv received from the server: one of
// *ReceivedPacket, PeerGone, PeerPresent, Health, Restarting, KeepAlive,
// ServerInfo, or Ping with Options.ReturnPings.
type Message interface {
	derpMessage()
}

// ReceivedPacket is a packet relayed to us. Recv reuses one ReceivedPacket
// per Client; it and its Data are valid only until the next call to Recv.
type ReceivedPacket struct {
	Source key.NodePublic
	Data   []byte
}

// PeerGoneReason says why the server sent PeerGone.
type PeerGoneReason byte

const (
	// PeerGoneDisconnected means the peer, which had sent us packets,
	// disconnected from this server.
	PeerGoneDisconnected PeerGoneReason = 0x00
	// PeerGoneNotHere means we sent to a key the server does not know.
	PeerGoneNotHere PeerGoneReason = 0x01
)

// PeerGone reports that a peer is no longer reachable through this server.
type PeerGone struct {
	Key    key.NodePublic
	Reason PeerGoneReason
}

// PeerPresent reports a peer connecting; only mesh watchers receive it.
type PeerPresent struct {
	Key      key.NodePublic
	AddrPort netip.AddrPort // zero if the server did not say
	Flags    byte
}

// Health carries the server's view of this connection's health. An empty
// Problem means healthy.
type Health struct {
	Problem string // at most MaxProblemLen bytes; the rest is dropped
}

// MaxProblemLen bounds Health.Problem: a server may send up to a megabyte.
const MaxProblemLen = 256

// Restarting announces that the server is about to restart: reconnect after
// ReconnectIn and keep trying for TryFor.
type Restarting struct {
	ReconnectIn time.Duration
	TryFor      time.Duration
}

// KeepAlive is the server's periodic no-op frame.
type KeepAlive struct{}

// Ping is a server's ping, to be answered with Client.SendPong.
type Ping [8]byte

func (*ReceivedPacket) derpMessage() {}
func (PeerGone) derpMessage()        {}
func (PeerPresent) derpMessage()     {}
func (Health) derpMessage()          {}
func (Restarting) derpMessage()      {}
func (KeepAlive) derpMessage()       {}
func (Ping) derpMessage()            {}
