package tun

import (
	"encoding/binary"
	"errors"
	"net/netip"

	"github.com/microlink-go/microlink/internal/packet"
)

// With IFF_VNET_HDR every packet read from or written to the device
// starts with a struct virtio_net_hdr, in the host's byte order. It lets
// the host hand the node TCP segments of up to 64 KiB (segmentation
// offload) with their checksums left to the node, which saves the host
// most of its per-packet work; the node cuts them into packets of the
// tunnel's size.
const vnetHdrLen = 10

// virtio_net_hdr fields.
const (
	vnetNeedsCsum = 1 // flags: the checksum at csumStart+csumOffset is to be completed

	gsoNone  = 0
	gsoTCPv4 = 1
	gsoTCPv6 = 4
	gsoECN   = 0x80
)

type vnetHdr struct {
	flags      uint8
	gsoType    uint8
	hdrLen     uint16
	gsoSize    uint16
	csumStart  uint16
	csumOffset uint16
}

func parseVnetHdr(b []byte) vnetHdr {
	return vnetHdr{
		flags:      b[0],
		gsoType:    b[1],
		hdrLen:     binary.NativeEndian.Uint16(b[2:]),
		gsoSize:    binary.NativeEndian.Uint16(b[4:]),
		csumStart:  binary.NativeEndian.Uint16(b[6:]),
		csumOffset: binary.NativeEndian.Uint16(b[8:]),
	}
}

func (h vnetHdr) put(b []byte) {
	b[0], b[1] = h.flags, h.gsoType
	binary.NativeEndian.PutUint16(b[2:], h.hdrLen)
	binary.NativeEndian.PutUint16(b[4:], h.gsoSize)
	binary.NativeEndian.PutUint16(b[6:], h.csumStart)
	binary.NativeEndian.PutUint16(b[8:], h.csumOffset)
}

var errBadOffload = errors.New("tun: malformed offloaded packet")

// TCP flags the segmentation adjusts.
const (
	tcpFIN = 0x01
	tcpPSH = 0x08
	tcpCWR = 0x80
)

// pseudoPartial returns the sum of the IP pseudo header of a TCP
// segment of length n in the IPv4 or IPv6 packet pkt, folded but not
// complemented: what a checksum field holds for the host (or the node) to
// complete.
func pseudoPartial(pkt []byte, n int) uint16 {
	var ph [40]byte
	if pkt[0]>>4 == 4 {
		copy(ph[:8], pkt[12:20])
		ph[9] = 6
		binary.BigEndian.PutUint16(ph[10:], uint16(n))
		return ^packet.Checksum(ph[:12])
	}
	copy(ph[:32], pkt[8:40])
	binary.BigEndian.PutUint32(ph[32:], uint32(n))
	ph[39] = 6
	return ^packet.Checksum(ph[:])
}

// tcpChecksum returns the checksum of the TCP segment tcp in the IPv4 or
// IPv6 packet pkt, whose checksum field must be zero.
func tcpChecksum(pkt, tcp []byte) uint16 {
	var src, dst netip.Addr
	if pkt[0]>>4 == 4 {
		src, dst = netip.AddrFrom4([4]byte(pkt[12:16])), netip.AddrFrom4([4]byte(pkt[16:20]))
	} else {
		src, dst = netip.AddrFrom16([16]byte(pkt[8:24])), netip.AddrFrom16([16]byte(pkt[24:40]))
	}
	return packet.TransportChecksum(src, dst, packet.ProtoTCP, tcp)
}

// completeCsum finishes the checksum the host left to the node: the field
// at start+offset holds the pseudo header's sum, and the checksum covers
// everything from start to the end of the packet.
func completeCsum(pkt []byte, start, offset int) error {
	at := start + offset
	if start > len(pkt) || at+2 > len(pkt) {
		return errBadOffload
	}
	binary.BigEndian.PutUint16(pkt[at:], packet.Checksum(pkt[start:]))
	return nil
}

// segmentTCP cuts the TCP packet pkt, offloaded with header h, into
// packets with at most h.gsoSize bytes of payload each, built one at a
// time in buf, and calls fn with each. Each gets its own IP length, IPv4
// ID and header checksum, sequence number and TCP checksum; FIN and PSH
// stay on the last packet only, CWR on the first only.
func segmentTCP(pkt []byte, h vnetHdr, buf []byte, fn func([]byte)) error {
	v4 := h.gsoType&^gsoECN == gsoTCPv4
	if len(pkt) < 20 || (pkt[0]>>4 == 4) != v4 {
		return errBadOffload
	}
	tcpOff := int(h.csumStart)
	if tcpOff+20 > len(pkt) {
		return errBadOffload
	}
	tcpLen := int(pkt[tcpOff+12]>>4) * 4
	hdrLen := tcpOff + tcpLen
	mss := int(h.gsoSize)
	if tcpLen < 20 || hdrLen > len(pkt) || mss == 0 || hdrLen+mss > len(buf) {
		return errBadOffload
	}
	if v4 && (int(pkt[0]&0x0f)*4 != tcpOff || pkt[9] != 6) {
		return errBadOffload
	}
	if !v4 && (len(pkt) < 40 || tcpOff < 40) {
		return errBadOffload
	}
	payload := pkt[hdrLen:]
	seq := binary.BigEndian.Uint32(pkt[tcpOff+4:])
	id := binary.BigEndian.Uint16(pkt[4:])
	flags := pkt[tcpOff+13]
	for i, off := 0, 0; off < len(payload); i, off = i+1, off+mss {
		end := min(off+mss, len(payload))
		seg := buf[:hdrLen+end-off]
		copy(seg, pkt[:hdrLen])
		copy(seg[hdrLen:], payload[off:end])
		if v4 {
			binary.BigEndian.PutUint16(seg[2:], uint16(len(seg)))
			binary.BigEndian.PutUint16(seg[4:], id+uint16(i))
			seg[10], seg[11] = 0, 0
			binary.BigEndian.PutUint16(seg[10:], packet.Checksum(seg[:tcpOff]))
		} else {
			binary.BigEndian.PutUint16(seg[4:], uint16(len(seg)-40))
		}
		tcp := seg[tcpOff:]
		binary.BigEndian.PutUint32(tcp[4:], seq+uint32(off))
		f := flags
		if end != len(payload) {
			f &^= tcpFIN | tcpPSH
		}
		if i != 0 {
			f &^= tcpCWR
		}
		tcp[13] = f
		tcp[16], tcp[17] = 0, 0
		binary.BigEndian.PutUint16(tcp[16:], tcpChecksum(seg, tcp))
		fn(seg)
	}
	return nil
}
