package magicsock

import (
	"net/netip"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestSocketBuffers: the UDP sockets get 7 MiB buffers each way; as root
// (CAP_NET_ADMIN) past net.core.rmem_max and wmem_max.
func TestSocketBuffers(t *testing.T) {
	pc, err := listenUDP("udp4", netip.MustParseAddr("127.0.0.1"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	rc, err := pc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var rcv, snd int
	rc.Control(func(fd uintptr) {
		rcv, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
		snd, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF)
	})
	t.Logf("receive buffer %d, send buffer %d (the kernel reports twice what was set)", rcv, snd)
	if os.Geteuid() != 0 {
		t.Skip("not root: the buffers are capped at net.core.rmem_max and wmem_max")
	}
	if rcv < socketBuffer || snd < socketBuffer {
		t.Fatalf("buffers %d and %d, want at least %d", rcv, snd, socketBuffer)
	}
}
