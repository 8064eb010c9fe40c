package magicsock

import (
	"encoding/binary"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// UDP segmentation offload limits: segments per send (the kernel's
// UDP_MAX_SEGMENTS is 64 before Linux 6.9, 128 since) and the payload of
// one send, which must fit an IP packet's length field.
const (
	maxSegments = 64
	maxGSOBytes = 65000
)

// batchWriter sends a socket's share of a batch: runs of datagrams to one
// destination, of one size but for a shorter last one, as one GSO send
// each, and all the sends in one sendmmsg. Its arrays are reused; it does
// not allocate once made. The Conn's out.mu guards it.
type batchWriter struct {
	pc     *net.UDPConn // the socket rc and gso are of
	rc     syscall.RawConn
	gso    bool // the kernel takes UDP_SEGMENT on this socket
	noMMsg bool // sendmmsg is missing (ENOSYS): one sendmsg per send

	sel   [maxBatch]int // indexes of the datagrams of this family
	hdrs  [maxBatch]unix.Mmsghdr
	iovs  [maxBatch]unix.Iovec
	names [maxBatch]unix.RawSockaddrInet6
	ctrl  [maxBatch][32]byte
	segs  [maxBatch]int // datagrams in each send
	sizes [maxBatch]int // bytes in each send

	n, first int // sends built; the first not yet made
	errno    syscall.Errno
	fn       func(fd uintptr) bool // w.sendFD, made once
}

// gsoRefused reports whether errno is how the kernel refuses UDP GSO on
// a socket or route: no checksum offload on the way (EIO), options that
// exclude it such as SO_NO_CHECK or a segment larger than the MTU
// (EINVAL), or no support at all.
func gsoRefused(errno syscall.Errno) bool {
	return errno == unix.EIO || errno == unix.EINVAL || errno == unix.EOPNOTSUPP || errno == unix.ENOPROTOOPT
}

func (w *batchWriter) setSocket(pc *net.UDPConn) {
	w.pc, w.rc, w.gso = pc, nil, false
	rc, err := pc.SyscallConn()
	if err != nil {
		return
	}
	w.rc = rc
	rc.Control(func(fd uintptr) {
		_, err := unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT)
		w.gso = err == nil
	})
	if w.fn == nil {
		w.fn = w.sendFD
	}
}

// write sends the datagrams of msgs whose destination is of the family
// (IPv4 if want4) from pc, out of buf, and counts those sent in ctr.
func (w *batchWriter) write(pc *net.UDPConn, buf []byte, msgs []heldMsg, want4 bool, ctr *counter) {
	if w.pc != pc {
		w.setSocket(pc)
	}
	if w.rc == nil {
		return
	}
	k := 0
	for i := range msgs {
		if msgs[i].dst.Addr().Is4() == want4 {
			w.sel[k] = i
			k++
		}
	}
	sel := w.sel[:k]
	for len(sel) > 0 {
		gso := w.gso
		w.build(buf, msgs, sel, gso)
		if w.rc.Write(w.fn) != nil {
			return // the socket is closed
		}
		done := 0
		for i := range w.first {
			ctr.packets.Add(uint64(w.segs[i]))
			ctr.bytes.Add(uint64(w.sizes[i]))
			done += w.segs[i]
		}
		if w.first == w.n {
			return
		}
		// Send number w.first failed.
		if w.segs[w.first] > 1 && gsoRefused(w.errno) {
			w.gso = false // and send them again one by one
			sel = sel[done:]
			continue
		}
		sel = sel[done+w.segs[w.first]:] // lost
	}
}

// build prepares the sends for the datagrams msgs[sel[i]], joining runs
// into GSO sends if gso is set.
func (w *batchWriter) build(buf []byte, msgs []heldMsg, sel []int, gso bool) {
	nh := 0
	for i := 0; i < len(sel); nh++ {
		m := msgs[sel[i]]
		j, total := i+1, m.n
		for gso && j < len(sel) && j-i < maxSegments {
			prev, o := msgs[sel[j-1]], msgs[sel[j]]
			if o.dst != m.dst || o.n > m.n || o.n == 0 || total+o.n > maxGSOBytes || o.off != prev.off+prev.n || prev.n != m.n {
				break
			}
			total += o.n
			j++
		}
		h := &w.hdrs[nh].Hdr
		*h = unix.Msghdr{}
		w.iovs[nh] = unix.Iovec{}
		if total > 0 {
			w.iovs[nh].Base = &buf[m.off]
		}
		w.iovs[nh].SetLen(total)
		h.Iov = &w.iovs[nh]
		h.SetIovlen(1)
		h.Name = (*byte)(unsafe.Pointer(&w.names[nh]))
		h.Namelen = putSockaddr(&w.names[nh], m.dst)
		if j-i > 1 {
			c := &w.ctrl[nh]
			cm := (*unix.Cmsghdr)(unsafe.Pointer(&c[0]))
			cm.Level, cm.Type = unix.IPPROTO_UDP, unix.UDP_SEGMENT
			cm.SetLen(unix.CmsgLen(2))
			binary.NativeEndian.PutUint16(c[unix.CmsgLen(0):], uint16(m.n))
			h.Control = &c[0]
			h.SetControllen(unix.CmsgSpace(2))
		}
		w.segs[nh], w.sizes[nh] = j-i, total
		i = j
	}
	w.n, w.first, w.errno = nh, 0, 0
}

// putSockaddr writes dst into sa as the kernel takes it and returns its
// length: a sockaddr_in for an IPv4 address, else a sockaddr_in6.
func putSockaddr(sa *unix.RawSockaddrInet6, dst netip.AddrPort) uint32 {
	port := (*[2]byte)(unsafe.Pointer(&sa.Port))
	binary.BigEndian.PutUint16(port[:], dst.Port())
	if a := dst.Addr(); a.Is4() {
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		sa4.Family = unix.AF_INET
		sa4.Addr = a.As4()
		sa4.Zero = [8]byte{}
		return unix.SizeofSockaddrInet4
	}
	sa.Family = unix.AF_INET6
	sa.Flowinfo, sa.Scope_id = 0, 0
	sa.Addr = dst.Addr().As16()
	return unix.SizeofSockaddrInet6
}

// sendFD makes the sends from w.first on, in as few system calls as it
// can. It stops at the first that fails, with its errno in w.errno, and
// returns false when the socket's buffer is full, for the runtime to wait
// until it may write.
func (w *batchWriter) sendFD(fd uintptr) bool {
	for w.first < w.n {
		var r uintptr
		var e syscall.Errno
		if w.noMMsg {
			r, _, e = unix.Syscall(unix.SYS_SENDMSG, fd, uintptr(unsafe.Pointer(&w.hdrs[w.first].Hdr)), 0)
			if e == 0 {
				r = 1
			}
		} else {
			r, _, e = unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&w.hdrs[w.first])), uintptr(w.n-w.first), 0, 0, 0)
		}
		switch e {
		case 0:
			w.first += int(r)
		case unix.EINTR:
		case unix.EAGAIN:
			return false
		case unix.ENOSYS:
			if w.noMMsg {
				w.errno = e
				return true
			}
			w.noMMsg = true
		default:
			w.errno = e
			return true
		}
	}
	return true
}
