package router

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/microlink-go/microlink/internal/packet"
)

// pingFlow is one peer's echo identifier towards a destination, through
// a host ICMP socket of its own (the host picks the identifier it sends
// with; replies are sent back with the peer's).
type pingFlow struct {
	c    net.PacketConn
	last time.Time // guarded by Relay.mu
}

// listenPing opens an unprivileged ICMP ("ping") socket.
func listenPing(v4 bool) (net.PacketConn, error) {
	fam, proto := unix.AF_INET, unix.IPPROTO_ICMP
	if !v4 {
		fam, proto = unix.AF_INET6, unix.IPPROTO_ICMPV6
	}
	fd, err := unix.Socket(fam, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "icmp")
	defer f.Close()
	return net.FilePacketConn(f)
}

// ping sends an echo request from a peer on through the host.
func (r *Relay) ping(p *packet.Parsed) {
	k := flowKey{netip.AddrPortFrom(p.Src, p.ICMPID), netip.AddrPortFrom(p.Dst, 0)}
	r.mu.Lock()
	f := r.pings[k]
	if f == nil && !r.closed && len(r.pings) < maxPingFlows {
		c, err := listenPing(p.Dst.Is4())
		if err != nil {
			warn := !r.warned
			r.warned = true
			r.mu.Unlock()
			if warn && (errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM)) {
				r.logger.Warn("router: the host does not let this process open ICMP sockets, so pings to routed networks go unanswered; "+
					"add its group to the sysctl net.ipv4.ping_group_range", "gid", os.Getgid())
			}
			return
		}
		f = &pingFlow{c: c}
		r.pings[k] = f
		r.wg.Add(1)
		go r.readPing(k, f)
	}
	if f != nil {
		f.last = time.Now()
	}
	r.mu.Unlock()
	if f == nil {
		return
	}
	// The host fills in its own identifier and the checksum.
	m := p.Transport()
	msg := make([]byte, len(m))
	copy(msg, m)
	binary.BigEndian.PutUint16(msg[2:], 0)
	binary.BigEndian.PutUint16(msg[4:], 0)
	f.c.WriteTo(msg, &net.UDPAddr{IP: p.Dst.AsSlice()})
}

// readPing returns the destination's echo replies to the peer until the
// flow is idle for pingIdle.
func (r *Relay) readPing(k flowKey, f *pingFlow) {
	defer r.wg.Done()
	defer r.closeFlow(func() { delete(r.pings, k) }, f.c)
	src, dst := k.dst.Addr(), k.src.Addr() // of the replies
	bp := r.pool.Get()
	defer r.pool.Put(bp)
	buf := *bp
	hl := packet.IPHeaderLen(src)
	reply, proto := uint8(packet.ICMPv4EchoReply), packet.ProtoICMPv4
	if src.Is6() {
		reply, proto = packet.ICMPv6EchoReply, packet.ProtoICMPv6
	}
	for {
		f.c.SetReadDeadline(time.Now().Add(pingIdle))
		n, _, err := f.c.ReadFrom(buf[hl:])
		if err != nil {
			if errors.Is(err, net.ErrClosed) || r.idle(&f.last, pingIdle) {
				return
			}
			continue
		}
		m := buf[hl : hl+n]
		if n < packet.ICMPHeaderLen || m[0] != reply {
			continue
		}
		binary.BigEndian.PutUint16(m[4:], k.src.Port())
		m[2], m[3] = 0, 0
		var c uint16
		if src.Is4() {
			c = packet.Checksum(m)
			if packet.PutIPv4Header(buf, proto, src, dst, 0, n) != nil {
				continue
			}
		} else {
			c = packet.TransportChecksum(src, dst, proto, m)
			if packet.PutIPv6Header(buf, proto, src, dst, 0, n) != nil {
				continue
			}
		}
		binary.BigEndian.PutUint16(m[2:], c)
		r.cfg.Stack.Outbound(buf[:hl+n])
	}
}
