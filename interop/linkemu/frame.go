package linkemu

import (
	"encoding/binary"
	"errors"
)

// Frames come from the packet socket behind a virtio_net_hdr (the socket
// has PACKET_VNET_HDR), which says whether the frame is a GSO
// super-packet, to be cut into the datagrams or segments it stands for,
// and whether its transport checksum is still to be filled in. Frames go
// out with a zero header: cut and with their checksums complete.

const vnetHdrLen = 10

// virtio_net_hdr fields.
const (
	vnetNeedsCsum = 1

	gsoNone  = 0
	gsoTCPv4 = 1
	gsoUDP   = 3
	gsoTCPv6 = 4
	gsoUDPL4 = 5
	gsoECN   = 0x80
)

const (
	ethLen       = 14
	etherTypeIP4 = 0x0800
	etherTypeIP6 = 0x86dd
	protoTCP     = 6
	protoUDP     = 17
)

var errFrame = errors.New("linkemu: frame not understood")

// ipFrame is the parsed layout of an Ethernet frame carrying IPv4 or IPv6.
type ipFrame struct {
	v6     bool
	ipOff  int // offset of the IP header (after Ethernet)
	l4Off  int // offset of the transport header
	proto  byte
	l4Hdr  int // transport header length (TCP with options, UDP 8)
	srcIP  []byte
	dstIP  []byte
	frame  []byte
	l4Port [2]uint16 // source and destination port
}

func parseFrame(f []byte) (ipFrame, bool) {
	p := ipFrame{frame: f, ipOff: ethLen}
	if len(f) < ethLen {
		return p, false
	}
	switch binary.BigEndian.Uint16(f[12:14]) {
	case etherTypeIP4:
		ip := f[ethLen:]
		if len(ip) < 20 || ip[0]>>4 != 4 {
			return p, false
		}
		ihl := int(ip[0]&0xf) * 4
		if ihl < 20 || len(ip) < ihl {
			return p, false
		}
		p.proto, p.l4Off = ip[9], ethLen+ihl
		p.srcIP, p.dstIP = ip[12:16], ip[16:20]
	case etherTypeIP6:
		ip := f[ethLen:]
		if len(ip) < 40 || ip[0]>>4 != 6 {
			return p, false
		}
		p.v6 = true
		p.proto, p.l4Off = ip[6], ethLen+40
		p.srcIP, p.dstIP = ip[8:24], ip[24:40]
	default:
		return p, false
	}
	switch p.proto {
	case protoUDP:
		p.l4Hdr = 8
	case protoTCP:
		if len(f) < p.l4Off+20 {
			return p, false
		}
		p.l4Hdr = int(f[p.l4Off+12]>>4) * 4
	default:
		return p, true
	}
	if p.l4Hdr < 8 || len(f) < p.l4Off+p.l4Hdr {
		return p, false
	}
	p.l4Port[0] = binary.BigEndian.Uint16(f[p.l4Off:])
	p.l4Port[1] = binary.BigEndian.Uint16(f[p.l4Off+2:])
	return p, true
}

// sum16 adds b to the ones' complement sum s.
func sum16(s uint32, b []byte) uint32 {
	for len(b) >= 2 {
		s += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	return s
}

func fold(s uint32) uint16 {
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// fixIP sets the IP header's length fields (and the IPv4 checksum) for a
// frame of total length n.
func (p *ipFrame) fixIP(f []byte) {
	ip := f[p.ipOff:]
	if p.v6 {
		binary.BigEndian.PutUint16(ip[4:6], uint16(len(f)-p.ipOff-40))
		return
	}
	ihl := int(ip[0]&0xf) * 4
	binary.BigEndian.PutUint16(ip[2:4], uint16(len(f)-p.ipOff))
	ip[10], ip[11] = 0, 0
	binary.BigEndian.PutUint16(ip[10:12], fold(sum16(0, ip[:ihl])))
}

// fixL4 computes the TCP or UDP checksum of frame f in full.
func (p *ipFrame) fixL4(f []byte) {
	l4 := f[p.l4Off:]
	at := 16 // TCP
	if p.proto == protoUDP {
		at = 6
		binary.BigEndian.PutUint16(l4[4:6], uint16(len(l4)))
	}
	if len(l4) < at+2 {
		return
	}
	l4[at], l4[at+1] = 0, 0
	ip := f[p.ipOff:]
	var s uint32
	if p.v6 {
		s = sum16(s, ip[8:40])
	} else {
		s = sum16(s, ip[12:20])
	}
	s += uint32(p.proto) + uint32(len(l4))
	c := fold(sum16(s, l4))
	if c == 0 && p.proto == protoUDP {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(l4[at:], c)
}

// cut calls emit with each wire frame that the frame behind vnet header h
// stands for, into scratch buffers it may reuse after emit returns.
func cut(h, f []byte, scratch []byte, emit func(frame []byte)) error {
	flags, gso := h[0], h[1]&^gsoECN
	gsoSize := int(binary.NativeEndian.Uint16(h[4:6]))
	if gso == gsoNone {
		if flags&vnetNeedsCsum != 0 {
			p, ok := parseFrame(f)
			switch {
			case ok && (p.proto == protoTCP || p.proto == protoUDP):
				p.fixL4(f)
			default:
				start := int(binary.NativeEndian.Uint16(h[6:8]))
				off := int(binary.NativeEndian.Uint16(h[8:10]))
				if start+off+2 > len(f) {
					return errFrame
				}
				// The field holds the pseudo-header sum: finish it.
				binary.BigEndian.PutUint16(f[start+off:], fold(sum16(0, f[start:])))
			}
		}
		emit(f)
		return nil
	}
	p, ok := parseFrame(f)
	if !ok || gsoSize <= 0 {
		return errFrame
	}
	switch {
	case (gso == gsoUDPL4 || gso == gsoUDP) && p.proto == protoUDP:
	case (gso == gsoTCPv4 || gso == gsoTCPv6) && p.proto == protoTCP:
	default:
		return errFrame
	}
	hdr := p.l4Off + p.l4Hdr
	payload := f[hdr:]
	var seq uint32
	var tcpFlags byte
	if p.proto == protoTCP {
		seq = binary.BigEndian.Uint32(f[p.l4Off+4:])
		tcpFlags = f[p.l4Off+13]
	}
	var id uint16
	if !p.v6 {
		id = binary.BigEndian.Uint16(f[p.ipOff+4:])
	}
	for i := 0; len(payload) > 0; i++ {
		n := min(gsoSize, len(payload))
		seg := append(scratch[:0], f[:hdr]...)
		seg = append(seg, payload[:n]...)
		q := p
		q.frame = seg
		if !p.v6 {
			binary.BigEndian.PutUint16(seg[p.ipOff+4:], id+uint16(i))
		}
		if p.proto == protoTCP {
			binary.BigEndian.PutUint32(seg[p.l4Off+4:], seq+uint32(i*gsoSize))
			fl := tcpFlags
			if n < len(payload) {
				fl &^= 0x01 | 0x08 // FIN and PSH only on the last
			}
			if i > 0 {
				fl &^= 0x80 // CWR only on the first
			}
			seg[p.l4Off+13] = fl
		}
		q.fixIP(seg)
		q.fixL4(seg)
		emit(seg)
		payload = payload[n:]
	}
	return nil
}
