package packet

import (
	"encoding/binary"
	"errors"
	"net/netip"
)

var (
	errShort       = errors.New("packet: too short")
	errVersion     = errors.New("packet: not IPv4 or IPv6")
	errHeader      = errors.New("packet: bad IP header")
	errTruncated   = errors.New("packet: shorter than its IP length")
	errTransport   = errors.New("packet: bad or truncated transport header")
	errFragOffset  = errors.New("packet: fragment overlaps transport header")
	errFragTSMP    = errors.New("packet: fragmented TSMP")
	errExtHeaders  = errors.New("packet: too many IPv6 extension headers")
	errExtTruncate = errors.New("packet: truncated IPv6 extension header")
)

// minFragOffset is the smallest offset, in 8-byte units, a later fragment
// may have. A smaller one could overwrite the transport header of the first
// fragment (RFC 1858), so such fragments are rejected: 60 bytes of IPv4
// header plus 20 of TCP header.
const minFragOffset = (60 + 20) / 8

// maxExtHeaders bounds the IPv6 extension header chain Decode walks.
const maxExtHeaders = 8

// IPv6 extension header numbers that Decode steps over.
const (
	ipv6HopByHop = 0
	ipv6Routing  = 43
	ipv6Fragment = 44
	ipv6DestOpts = 60
)

// Parsed is a decoded IP packet. Decode fills it in; it refers to the
// decoded buffer, which must not change while the Parsed is in use.
type Parsed struct {
	b          []byte // the packet, cut to the length its IP header states
	payloadOff int
	payloadEnd int
	moreFrags  bool

	// Version is 4 or 6, or 0 if the last Decode failed.
	Version uint8
	// Proto is the transport protocol, after any IPv6 extension headers.
	Proto Proto
	// Src and Dst are the IP source and destination addresses.
	Src, Dst netip.Addr
	// SrcPort and DstPort are set for TCP, UDP and SCTP, except in
	// Fragment packets.
	SrcPort, DstPort uint16
	// HeaderLen is the length of the IP header with its options or
	// extension headers: the offset of the transport header.
	HeaderLen int
	// TTL is the IPv4 time to live or IPv6 hop limit.
	TTL uint8
	// Fragment reports that the packet is a fragment other than the
	// first. Proto is known, but there is no transport header.
	Fragment bool
	// TCPFlags is set for TCP.
	TCPFlags TCPFlags
	// ICMPType and ICMPCode are set for ICMPv4 in IPv4 packets and
	// ICMPv6 in IPv6 packets.
	ICMPType, ICMPCode uint8
	// ICMPID and ICMPSeq are the identifier and sequence number of an
	// ICMP echo request or reply.
	ICMPID, ICMPSeq uint16
}

// Decode parses the IPv4 or IPv6 packet in b into p. Bytes past the length
// the IP header states are ignored. It reports an error for a malformed or
// truncated packet, leaving p.Version zero.
func (p *Parsed) Decode(b []byte) error {
	*p = Parsed{}
	var err error
	switch {
	case len(b) == 0:
		err = errShort
	case b[0]>>4 == 4:
		err = p.decode4(b)
	case b[0]>>4 == 6:
		err = p.decode6(b)
	default:
		err = errVersion
	}
	if err != nil {
		*p = Parsed{}
		return err
	}
	return nil
}

func (p *Parsed) decode4(b []byte) error {
	if len(b) < IPv4HeaderLen {
		return errShort
	}
	hl := int(b[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(b[2:4]))
	if hl < IPv4HeaderLen || total < hl {
		return errHeader
	}
	if total > len(b) {
		return errTruncated
	}
	b = b[:total]
	p.b = b
	p.Version = 4
	p.Proto = Proto(b[9])
	p.TTL = b[8]
	p.Src = netip.AddrFrom4([4]byte(b[12:16]))
	p.Dst = netip.AddrFrom4([4]byte(b[16:20]))
	p.HeaderLen = hl

	frag := binary.BigEndian.Uint16(b[6:8])
	p.moreFrags = frag&0x2000 != 0
	if off := frag & 0x1fff; off != 0 {
		return p.laterFragment(off)
	}
	return p.decodeTransport()
}

func (p *Parsed) decode6(b []byte) error {
	if len(b) < IPv6HeaderLen {
		return errShort
	}
	total := IPv6HeaderLen + int(binary.BigEndian.Uint16(b[4:6]))
	if total > len(b) {
		return errTruncated
	}
	b = b[:total]
	p.b = b
	p.Version = 6
	p.TTL = b[7]
	p.Src = netip.AddrFrom16([16]byte(b[8:24]))
	p.Dst = netip.AddrFrom16([16]byte(b[24:40]))

	next, off := b[6], IPv6HeaderLen
	for range maxExtHeaders {
		switch next {
		case ipv6HopByHop, ipv6Routing, ipv6DestOpts:
			if len(b)-off < 8 {
				return errExtTruncate
			}
			n := (int(b[off+1]) + 1) * 8
			if len(b)-off < n {
				return errExtTruncate
			}
			next, off = b[off], off+n
		case ipv6Fragment:
			if len(b)-off < 8 {
				return errExtTruncate
			}
			fo := binary.BigEndian.Uint16(b[off+2 : off+4])
			p.moreFrags = fo&1 != 0
			next, off = b[off], off+8
			if fo>>3 != 0 {
				p.Proto = Proto(next)
				p.HeaderLen = off
				return p.laterFragment(fo >> 3)
			}
		default:
			p.Proto = Proto(next)
			p.HeaderLen = off
			return p.decodeTransport()
		}
	}
	return errExtHeaders
}

// laterFragment finishes decoding a fragment at offset off (in 8-byte
// units) other than the first.
func (p *Parsed) laterFragment(off uint16) error {
	if off < minFragOffset {
		return errFragOffset
	}
	if p.Proto == ProtoTSMP {
		return errFragTSMP
	}
	p.Fragment = true
	p.payloadOff = p.HeaderLen
	p.payloadEnd = len(p.b)
	return nil
}

// decodeTransport decodes the transport header at p.HeaderLen of an
// unfragmented packet or of a first fragment. A first fragment must hold
// the whole transport header, so that its ports cannot hide in a later
// fragment.
func (p *Parsed) decodeTransport() error {
	t := p.b[p.HeaderLen:]
	p.payloadOff = p.HeaderLen
	p.payloadEnd = len(p.b)
	switch p.Proto {
	case ProtoTCP:
		if len(t) < TCPHeaderLen {
			return errTransport
		}
		n := int(t[12]>>4) * 4
		if n < TCPHeaderLen || n > len(t) {
			return errTransport
		}
		p.SrcPort = binary.BigEndian.Uint16(t[0:2])
		p.DstPort = binary.BigEndian.Uint16(t[2:4])
		p.TCPFlags = TCPFlags(t[13])
		p.payloadOff += n
	case ProtoUDP:
		if len(t) < UDPHeaderLen {
			return errTransport
		}
		n := int(binary.BigEndian.Uint16(t[4:6]))
		if n < UDPHeaderLen {
			return errTransport
		}
		if n > len(t) {
			if !p.moreFrags {
				return errTransport
			}
			n = len(t)
		}
		p.SrcPort = binary.BigEndian.Uint16(t[0:2])
		p.DstPort = binary.BigEndian.Uint16(t[2:4])
		p.payloadOff += UDPHeaderLen
		p.payloadEnd = p.HeaderLen + n
	case ProtoSCTP:
		if len(t) < 12 {
			return errTransport
		}
		p.SrcPort = binary.BigEndian.Uint16(t[0:2])
		p.DstPort = binary.BigEndian.Uint16(t[2:4])
		p.payloadOff += 12
	case ProtoTSMP:
		if p.moreFrags {
			return errFragTSMP
		}
		if len(t) < minTSMPLen {
			return errTransport
		}
	case ProtoICMPv4, ProtoICMPv6:
		if !p.isICMP() {
			break // the other family's ICMP: opaque
		}
		if len(t) < 4 {
			return errTransport
		}
		p.ICMPType, p.ICMPCode = t[0], t[1]
		if len(t) >= ICMPHeaderLen {
			p.ICMPID = binary.BigEndian.Uint16(t[4:6])
			p.ICMPSeq = binary.BigEndian.Uint16(t[6:8])
			p.payloadOff += ICMPHeaderLen
		} else {
			p.payloadOff = len(p.b)
		}
	}
	return nil
}

// isICMP reports whether p carries the ICMP of its IP version.
func (p *Parsed) isICMP() bool {
	return p.Version == 4 && p.Proto == ProtoICMPv4 || p.Version == 6 && p.Proto == ProtoICMPv6
}

// IsFragment reports whether p is any fragment of a larger packet, the
// first one included: its transport payload is incomplete.
func (p *Parsed) IsFragment() bool { return p.Fragment || p.moreFrags }

// Buffer returns the packet, cut to the length its IP header states.
func (p *Parsed) Buffer() []byte { return p.b }

// Transport returns the transport header and its payload.
func (p *Parsed) Transport() []byte {
	if p.Version == 0 {
		return nil
	}
	return p.b[p.HeaderLen:]
}

// Payload returns the payload of the transport protocol: the data after the
// TCP, UDP, SCTP or 8-byte ICMP header; the whole message for TSMP and
// other protocols; the fragment data for a later fragment.
func (p *Parsed) Payload() []byte {
	if p.Version == 0 {
		return nil
	}
	return p.b[p.payloadOff:p.payloadEnd]
}

// SrcAddrPort returns the source address and port.
func (p *Parsed) SrcAddrPort() netip.AddrPort { return netip.AddrPortFrom(p.Src, p.SrcPort) }

// DstAddrPort returns the destination address and port.
func (p *Parsed) DstAddrPort() netip.AddrPort { return netip.AddrPortFrom(p.Dst, p.DstPort) }

// IsTCPSyn reports whether p is a TCP segment that opens a connection: SYN
// set, ACK clear.
func (p *Parsed) IsTCPSyn() bool {
	return p.Proto == ProtoTCP && !p.Fragment && p.TCPFlags&(TCPSyn|TCPAck) == TCPSyn
}

// hasICMPHeader reports whether p is ICMP of its IP version with a full
// 8-byte header.
func (p *Parsed) hasICMPHeader() bool {
	return p.isICMP() && !p.Fragment && len(p.b)-p.HeaderLen >= ICMPHeaderLen
}

// IsEchoRequest reports whether p is an ICMP or ICMPv6 echo request.
func (p *Parsed) IsEchoRequest() bool {
	if !p.hasICMPHeader() || p.ICMPCode != 0 {
		return false
	}
	if p.Version == 4 {
		return p.ICMPType == ICMPv4EchoRequest
	}
	return p.ICMPType == ICMPv6EchoRequest
}

// IsEchoReply reports whether p is an ICMP or ICMPv6 echo reply.
func (p *Parsed) IsEchoReply() bool {
	if !p.hasICMPHeader() || p.ICMPCode != 0 {
		return false
	}
	if p.Version == 4 {
		return p.ICMPType == ICMPv4EchoReply
	}
	return p.ICMPType == ICMPv6EchoReply
}

// IsICMPError reports whether p is an ICMP error message: destination
// unreachable, time exceeded, parameter problem, or (ICMPv6) packet too big.
func (p *Parsed) IsICMPError() bool {
	if !p.hasICMPHeader() {
		return false
	}
	if p.Version == 4 {
		switch p.ICMPType {
		case ICMPv4Unreachable, ICMPv4TimeExceeded, ICMPv4ParamProblem:
			return true
		}
		return false
	}
	switch p.ICMPType {
	case ICMPv6Unreachable, ICMPv6PacketTooBig, ICMPv6TimeExceeded, ICMPv6ParamProblem:
		return true
	}
	return false
}

// ChecksumsValid reports whether the IPv4 header checksum and the UDP, TCP
// or ICMP checksum of p are correct. A UDP over IPv4 checksum of zero means
// none was sent and is accepted. The transport checksum of a fragment
// cannot be checked and is not. p must have been decoded successfully.
func (p *Parsed) ChecksumsValid() bool {
	switch p.Version {
	case 4:
		if Checksum(p.b[:p.HeaderLen]) != 0 {
			return false
		}
	case 6:
	default:
		return false
	}
	if p.Fragment || p.moreFrags {
		return true
	}
	t := p.b[p.HeaderLen:]
	switch p.Proto {
	case ProtoUDP:
		t = t[:p.payloadEnd-p.HeaderLen]
		if p.Version == 4 && t[6] == 0 && t[7] == 0 {
			return true
		}
		return transportChecksum(p.Src, p.Dst, ProtoUDP, t) == 0
	case ProtoTCP:
		return transportChecksum(p.Src, p.Dst, ProtoTCP, t) == 0
	case ProtoICMPv4:
		if p.Version == 4 {
			return Checksum(t) == 0
		}
	case ProtoICMPv6:
		if p.Version == 6 {
			return transportChecksum(p.Src, p.Dst, ProtoICMPv6, t) == 0
		}
	}
	return true
}

// String returns a short description of p for logs. It allocates.
func (p *Parsed) String() string {
	if p.Version == 0 {
		return "invalid-packet"
	}
	switch p.Proto {
	case ProtoTCP, ProtoUDP, ProtoSCTP:
		if !p.Fragment {
			return p.Proto.String() + "{" + p.SrcAddrPort().String() + " > " + p.DstAddrPort().String() + "}"
		}
	}
	return p.Proto.String() + "{" + p.Src.String() + " > " + p.Dst.String() + "}"
}
