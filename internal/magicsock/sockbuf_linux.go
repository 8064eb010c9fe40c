package magicsock

import (
	"net"

	"golang.org/x/sys/unix"
)

// sizeBuffers gives a UDP socket receive and send buffers of socketBuffer
// bytes: with the FORCE options, which pass net.core.rmem_max and wmem_max,
// when the process may (CAP_NET_ADMIN, as tailscaled does), else as much
// as those allow.
func sizeBuffers(pc *net.UDPConn) {
	rc, err := pc.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		for _, o := range [][2]int{{unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}, {unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}} {
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[0], socketBuffer) != nil {
				unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[1], socketBuffer)
			}
		}
	})
}
