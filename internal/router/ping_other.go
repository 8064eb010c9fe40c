//go:build !linux

package router

import (
	"net"

	"github.com/microlink-go/microlink/internal/packet"
)

// pingFlow is unused here: echo requests to routed networks are relayed
// only on Linux.
type pingFlow struct{ c net.PacketConn }

// ping drops the request.
func (r *Relay) ping(p *packet.Parsed) {}
