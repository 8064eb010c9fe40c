package packet

import "strconv"

// Proto is an IP protocol number, as found in the IPv4 Protocol and IPv6
// Next Header fields.
type Proto uint8

// IP protocol numbers this package knows by name.
const (
	ProtoICMPv4 Proto = 1
	ProtoIGMP   Proto = 2
	ProtoTCP    Proto = 6
	ProtoUDP    Proto = 17
	ProtoICMPv6 Proto = 58
	ProtoTSMP   Proto = 99 // Tailscale Message Protocol
	ProtoSCTP   Proto = 132
)

func (p Proto) String() string {
	switch p {
	case ProtoICMPv4:
		return "ICMPv4"
	case ProtoIGMP:
		return "IGMP"
	case ProtoTCP:
		return "TCP"
	case ProtoUDP:
		return "UDP"
	case ProtoICMPv6:
		return "ICMPv6"
	case ProtoTSMP:
		return "TSMP"
	case ProtoSCTP:
		return "SCTP"
	}
	return "proto-" + strconv.Itoa(int(p))
}

// TCPFlags holds the flag bits of a TCP header.
type TCPFlags uint8

// TCP flag bits.
const (
	TCPFin TCPFlags = 0x01
	TCPSyn TCPFlags = 0x02
	TCPRst TCPFlags = 0x04
	TCPPsh TCPFlags = 0x08
	TCPAck TCPFlags = 0x10
	TCPUrg TCPFlags = 0x20
	TCPEce TCPFlags = 0x40
	TCPCwr TCPFlags = 0x80
)

// ICMP message types used by this package.
const (
	ICMPv4EchoReply    = 0
	ICMPv4Unreachable  = 3
	ICMPv4EchoRequest  = 8
	ICMPv4TimeExceeded = 11
	ICMPv4ParamProblem = 12

	ICMPv6Unreachable  = 1
	ICMPv6PacketTooBig = 2
	ICMPv6TimeExceeded = 3
	ICMPv6ParamProblem = 4
	ICMPv6EchoRequest  = 128
	ICMPv6EchoReply    = 129
)

// Header lengths.
const (
	IPv4HeaderLen = 20 // without options
	IPv6HeaderLen = 40 // without extension headers
	UDPHeaderLen  = 8
	ICMPHeaderLen = 8 // type, code, checksum and the 4-byte rest of header
	TCPHeaderLen  = 20
)

// MaxPacketLen is the largest packet the builders produce: the IPv4 total
// length and IPv6 payload length fields are 16 bits.
const MaxPacketLen = 65535
