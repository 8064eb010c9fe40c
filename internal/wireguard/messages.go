package wireguard

import (
	"encoding/binary"
	"errors"
)

// Message types. On the wire the type is a little-endian 32-bit word: the
// type byte followed by three zero bytes.
const (
	TypeInitiation  = 1
	TypeResponse    = 2
	TypeCookieReply = 3
	TypeTransport   = 4
)

// Message sizes in bytes.
const (
	InitiationSize      = 148
	ResponseSize        = 92
	CookieReplySize     = 64
	TransportHeaderSize = 16
	KeepaliveSize       = TransportHeaderSize + tagSize
)

const (
	tagSize       = 16
	timestampSize = 12
	macSize       = 16
)

var errBadMessage = errors.New("wireguard: malformed message")

// initiation is the first handshake message, sent by the initiator.
type initiation struct {
	sender    uint32
	ephemeral [32]byte
	static    [32 + tagSize]byte
	timestamp [timestampSize + tagSize]byte
	mac1      [macSize]byte
	mac2      [macSize]byte
}

// response is the second handshake message, sent by the responder.
type response struct {
	sender    uint32
	receiver  uint32
	ephemeral [32]byte
	empty     [tagSize]byte
	mac1      [macSize]byte
	mac2      [macSize]byte
}

// cookieReply answers a handshake message that lacked a valid mac2 while
// the receiver was under load.
type cookieReply struct {
	receiver uint32
	nonce    [24]byte
	cookie   [macSize + tagSize]byte
}

// messageType returns the type of msg, or 0 if msg is too short or its
// reserved bytes are not zero.
func messageType(msg []byte) byte {
	if len(msg) < 4 || msg[1] != 0 || msg[2] != 0 || msg[3] != 0 {
		return 0
	}
	return msg[0]
}

func putType(b []byte, t byte) {
	binary.LittleEndian.PutUint32(b, uint32(t))
}

func (m *initiation) marshal(b *[InitiationSize]byte) {
	putType(b[:], TypeInitiation)
	binary.LittleEndian.PutUint32(b[4:], m.sender)
	copy(b[8:40], m.ephemeral[:])
	copy(b[40:88], m.static[:])
	copy(b[88:116], m.timestamp[:])
	copy(b[116:132], m.mac1[:])
	copy(b[132:148], m.mac2[:])
}

func parseInitiation(b []byte) (m initiation, err error) {
	if len(b) != InitiationSize || messageType(b) != TypeInitiation {
		return m, errBadMessage
	}
	m.sender = binary.LittleEndian.Uint32(b[4:])
	copy(m.ephemeral[:], b[8:40])
	copy(m.static[:], b[40:88])
	copy(m.timestamp[:], b[88:116])
	copy(m.mac1[:], b[116:132])
	copy(m.mac2[:], b[132:148])
	return m, nil
}

func (m *response) marshal(b *[ResponseSize]byte) {
	putType(b[:], TypeResponse)
	binary.LittleEndian.PutUint32(b[4:], m.sender)
	binary.LittleEndian.PutUint32(b[8:], m.receiver)
	copy(b[12:44], m.ephemeral[:])
	copy(b[44:60], m.empty[:])
	copy(b[60:76], m.mac1[:])
	copy(b[76:92], m.mac2[:])
}

func parseResponse(b []byte) (m response, err error) {
	if len(b) != ResponseSize || messageType(b) != TypeResponse {
		return m, errBadMessage
	}
	m.sender = binary.LittleEndian.Uint32(b[4:])
	m.receiver = binary.LittleEndian.Uint32(b[8:])
	copy(m.ephemeral[:], b[12:44])
	copy(m.empty[:], b[44:60])
	copy(m.mac1[:], b[60:76])
	copy(m.mac2[:], b[76:92])
	return m, nil
}

func (m *cookieReply) marshal(b *[CookieReplySize]byte) {
	putType(b[:], TypeCookieReply)
	binary.LittleEndian.PutUint32(b[4:], m.receiver)
	copy(b[8:32], m.nonce[:])
	copy(b[32:64], m.cookie[:])
}

func parseCookieReply(b []byte) (m cookieReply, err error) {
	if len(b) != CookieReplySize || messageType(b) != TypeCookieReply {
		return m, errBadMessage
	}
	m.receiver = binary.LittleEndian.Uint32(b[4:])
	copy(m.nonce[:], b[8:32])
	copy(m.cookie[:], b[32:64])
	return m, nil
}

// transportHeader is the fixed part of a transport message.
type transportHeader struct {
	receiver uint32
	counter  uint64
}

func parseTransportHeader(b []byte) (h transportHeader, err error) {
	if len(b) < KeepaliveSize || messageType(b) != TypeTransport {
		return h, errBadMessage
	}
	h.receiver = binary.LittleEndian.Uint32(b[4:])
	h.counter = binary.LittleEndian.Uint64(b[8:])
	return h, nil
}

// paddedLen returns n rounded up to a multiple of PaddingMultiple.
func paddedLen(n int) int {
	return (n + PaddingMultiple - 1) &^ (PaddingMultiple - 1)
}
