package magicsock

import (
	"encoding/binary"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// readBatchLen is how many datagrams one recvmmsg takes at most. Each
// gets a 64 KiB buffer: with UDP GRO, the kernel joins a peer's
// consecutive datagrams of one size into one of up to 64 KiB. The pages
// of the buffers become resident only as traffic fills them.
const readBatchLen = 8

// Switches for tests: read one datagram per system call, or without
// asking the kernel for GRO.
var testNoRecvmmsg, testNoGRO atomic.Bool

// batchReader reads a socket with recvmmsg, with UDP GRO when the kernel
// offers it. It does not allocate once made.
type batchReader struct {
	gro   bool
	hdrs  [readBatchLen]unix.Mmsghdr
	iovs  [readBatchLen]unix.Iovec
	names [readBatchLen]unix.RawSockaddrInet6
	ctrl  [readBatchLen][64]byte
	n     int // datagrams the last read returned
	errno syscall.Errno
	fn    func(fd uintptr) bool

	zoneIndex uint32 // the last IPv6 scope seen and its name
	zone      string
}

// readBatch runs readLoop with recvmmsg and returns true when pc is
// closed, or returns false at once if the kernel lacks recvmmsg.
func (c *Conn) readBatch(pc *net.UDPConn) bool {
	rc, err := pc.SyscallConn()
	if err != nil || testNoRecvmmsg.Load() {
		return false
	}
	r, bufs := newBatchReader(rc)
	var rb ReceiveBatch
	if c.opts.NewReceiveBatch != nil {
		rb = c.opts.NewReceiveBatch()
	}
	for {
		err := rc.Read(r.fn)
		if err == nil && r.errno != 0 {
			if r.errno == unix.ENOSYS && r.n == 0 {
				if r.gro {
					rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 0) })
				}
				return false
			}
			err = r.errno
		}
		if err != nil {
			if c.readFailed(err) {
				return true
			}
			continue
		}
		// What the node answers to a read of several datagrams (the ACKs
		// of the TCP segments they carried) leaves together.
		burst := r.n > 1 || r.n == 1 && r.segmentSize(0) > 0
		if burst {
			c.Cork()
		}
		if c.opts.Burst != nil {
			c.opts.Burst.Cork()
		}
		now := clock(time.Now()) // one reading for the whole read
		for i := range r.n {
			src, ok := r.source(i)
			b := bufs[i<<16:][:r.hdrs[i].Len]
			if !ok {
				continue
			}
			seg := r.segmentSize(i)
			for len(b) > 0 {
				n := len(b)
				if seg > 0 && seg < n {
					n = seg
				}
				c.receiveUDP(b[:n], src, rb, now)
				b = b[n:]
			}
		}
		if rb != nil {
			rb.Flush()
		}
		if c.opts.Burst != nil {
			c.opts.Burst.Uncork()
		}
		if burst {
			c.Uncork()
		}
	}
}

// newBatchReader returns a reader of rc and the buffers its datagrams
// land in, 64 KiB each.
func newBatchReader(rc syscall.RawConn) (*batchReader, []byte) {
	r := &batchReader{}
	r.fn = r.readFD
	if !testNoGRO.Load() {
		rc.Control(func(fd uintptr) {
			r.gro = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 1) == nil
		})
	}
	bufs := make([]byte, readBatchLen<<16)
	for i := range r.hdrs {
		r.iovs[i].Base = &bufs[i<<16]
		r.iovs[i].SetLen(1 << 16)
		h := &r.hdrs[i].Hdr
		h.Iov = &r.iovs[i]
		h.SetIovlen(1)
		h.Name = (*byte)(unsafe.Pointer(&r.names[i]))
		h.Control = &r.ctrl[i][0]
	}
	return r, bufs
}

// readFD reads what is waiting on fd, or returns false for the runtime
// to wait until something is.
func (r *batchReader) readFD(fd uintptr) bool {
	for i := range r.hdrs {
		h := &r.hdrs[i].Hdr
		h.Namelen = unix.SizeofSockaddrInet6
		h.SetControllen(len(r.ctrl[i]))
		h.Flags = 0
	}
	for {
		n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hdrs[0])), readBatchLen, 0, 0, 0)
		switch e {
		case 0:
			r.n, r.errno = int(n), 0
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		r.n, r.errno = 0, e
		return true
	}
}

// source returns the sender of datagram i, with IPv4-mapped addresses
// unmapped.
func (r *batchReader) source(i int) (netip.AddrPort, bool) {
	sa := &r.names[i]
	port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port), true
	case unix.AF_INET6:
		a := netip.AddrFrom16(sa.Addr).Unmap()
		if sa.Scope_id != 0 && a.Is6() {
			if sa.Scope_id != r.zoneIndex {
				r.zoneIndex, r.zone = sa.Scope_id, ""
				if ifi, err := net.InterfaceByIndex(int(sa.Scope_id)); err == nil {
					r.zone = ifi.Name
				}
			}
			if r.zone != "" {
				a = a.WithZone(r.zone)
			}
		}
		return netip.AddrPortFrom(a, port), true
	}
	return netip.AddrPort{}, false
}

// segmentSize returns the size of the datagrams the kernel joined into
// datagram i (UDP GRO), or 0 if it is one datagram.
func (r *batchReader) segmentSize(i int) int {
	if !r.gro {
		return 0
	}
	h := &r.hdrs[i].Hdr
	ctrl := r.ctrl[i][:h.Controllen]
	for len(ctrl) >= unix.SizeofCmsghdr {
		cm := (*unix.Cmsghdr)(unsafe.Pointer(&ctrl[0]))
		l := int(cm.Len)
		if l < unix.CmsgLen(0) || l > len(ctrl) {
			return 0
		}
		if cm.Level == unix.IPPROTO_UDP && cm.Type == unix.UDP_GRO && l >= unix.CmsgLen(4) {
			return int(binary.NativeEndian.Uint32(ctrl[unix.CmsgLen(0):]))
		}
		next := unix.CmsgSpace(l - unix.CmsgLen(0))
		if next > len(ctrl) {
			return 0
		}
		ctrl = ctrl[next:]
	}
	return 0
}
