//go:build !linux

package magicsock

import "net"

// sizeBuffers gives a UDP socket receive and send buffers of socketBuffer
// bytes, or as much as the system allows.
func sizeBuffers(pc *net.UDPConn) {
	pc.SetReadBuffer(socketBuffer)
	pc.SetWriteBuffer(socketBuffer)
}
