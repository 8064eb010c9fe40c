// Package disco encodes, decodes and seals Tailscale discovery messages.
//
// Disco messages let two nodes find and test the paths between them. On the
// wire a disco packet is
//
//	magic           6 bytes  "TS💬" (54 53 f0 9f 92 ac)
//	sender key     32 bytes  the sender's disco public key
//	nonce          24 bytes  random
//	box             N bytes  NaCl secretbox (16-byte tag ‖ ciphertext)
//
// The box is sealed with the NaCl box key shared between the two disco keys.
// Its plaintext is a type byte, a version byte (0) and a payload; receivers
// ignore payload bytes they do not understand.
package disco

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/microlink-go/microlink/internal/key"
)

// Magic starts every disco packet.
const Magic = "TS\xf0\x9f\x92\xac"

// Lengths of the parts of a disco packet.
const (
	MagicLen  = len(Magic)
	KeyLen    = 32
	NonceLen  = 24
	HeaderLen = MagicLen + KeyLen + NonceLen // 62: everything before the box
	TagLen    = 16                           // secretbox authenticator
	Overhead  = HeaderLen + TagLen           // bytes a sealed packet adds to its plaintext
)

// MessageType is the first plaintext byte of a disco message.
type MessageType byte

// Message types.
const (
	TypePing                             MessageType = 0x01
	TypePong                             MessageType = 0x02
	TypeCallMeMaybe                      MessageType = 0x03
	TypeBindUDPRelayEndpoint             MessageType = 0x04
	TypeBindUDPRelayEndpointChallenge    MessageType = 0x05
	TypeBindUDPRelayEndpointAnswer       MessageType = 0x06
	TypeCallMeMaybeVia                   MessageType = 0x07
	TypeAllocateUDPRelayEndpointRequest  MessageType = 0x08
	TypeAllocateUDPRelayEndpointResponse MessageType = 0x09
)

// version0 is the only message version defined.
const version0 = 0

// endpointLen is the wire size of one address: 16-byte IP and 2-byte port.
const endpointLen = 18

// Errors returned by Parse.
var (
	ErrShort       = errors.New("disco: message too short")
	ErrUnknownType = errors.New("disco: unknown message type")
)

// A Message is a disco message that can append its plaintext encoding,
// type and version bytes included, to a buffer.
type Message interface {
	AppendMarshal(b []byte) []byte
}

// LooksLikeDisco reports whether b is long enough to be a disco packet and
// starts with Magic. It does not authenticate anything.
func LooksLikeDisco(b []byte) bool {
	return len(b) >= HeaderLen && string(b[:MagicLen]) == Magic
}

// Source returns the sender's disco public key of a packet that LooksLikeDisco.
func Source(b []byte) (k key.DiscoPublic, ok bool) {
	if !LooksLikeDisco(b) {
		return k, false
	}
	copy(k[:], b[MagicLen:])
	return k, true
}

// Parse decodes a plaintext disco message. Trailing bytes are ignored.
func Parse(p []byte) (Message, error) {
	if len(p) < 2 {
		return nil, ErrShort
	}
	t, ver, body := MessageType(p[0]), p[1], p[2:]
	switch t {
	case TypePing:
		return decoded(parsePing(body))
	case TypePong:
		return decoded(parsePong(body))
	case TypeCallMeMaybe:
		return parseCallMeMaybe(ver, body), nil
	case TypeBindUDPRelayEndpoint:
		m := new(BindUDPRelayEndpoint)
		return decoded(m, m.decode(body))
	case TypeBindUDPRelayEndpointChallenge:
		m := new(BindUDPRelayEndpointChallenge)
		return decoded(m, m.decode(body))
	case TypeBindUDPRelayEndpointAnswer:
		m := new(BindUDPRelayEndpointAnswer)
		return decoded(m, m.decode(body))
	case TypeCallMeMaybeVia:
		m := new(CallMeMaybeVia)
		if ver != version0 {
			return m, nil
		}
		return decoded(m, m.decode(body))
	case TypeAllocateUDPRelayEndpointRequest:
		return decoded(parseAllocateRequest(ver, body))
	case TypeAllocateUDPRelayEndpointResponse:
		return decoded(parseAllocateResponse(ver, body))
	}
	return nil, fmt.Errorf("%w 0x%02x", ErrUnknownType, byte(t))
}

func decoded(m Message, err error) (Message, error) {
	if err != nil {
		return nil, err
	}
	return m, nil
}

// appendHeader appends the type and version bytes and n zero bytes for the
// payload, returning the whole buffer and the payload slice.
func appendHeader(b []byte, t MessageType, n int) (all, payload []byte) {
	start := len(b)
	b = append(b, byte(t), version0)
	b = append(b, make([]byte, n)...)
	return b, b[start+2:]
}

// putAddrPort writes ap as a 16-byte IP (IPv4 mapped into IPv6) and a
// big-endian port.
func putAddrPort(b []byte, ap netip.AddrPort) {
	ip := ap.Addr().As16()
	copy(b, ip[:])
	binary.BigEndian.PutUint16(b[16:], ap.Port())
}

func getAddrPort(b []byte) netip.AddrPort {
	ip := netip.AddrFrom16([16]byte(b[:16])).Unmap()
	return netip.AddrPortFrom(ip, binary.BigEndian.Uint16(b[16:18]))
}

func appendAddrPorts(b []byte, aps []netip.AddrPort) {
	for i, ap := range aps {
		putAddrPort(b[i*endpointLen:], ap)
	}
}

func getAddrPorts(b []byte) []netip.AddrPort {
	out := make([]netip.AddrPort, 0, len(b)/endpointLen)
	for ; len(b) >= endpointLen; b = b[endpointLen:] {
		out = append(out, getAddrPort(b))
	}
	return out
}

// Summary returns a short description of m for logs.
func Summary(m Message) string {
	switch m := m.(type) {
	case *Ping:
		return fmt.Sprintf("ping tx=%x", m.TxID[:6])
	case *Pong:
		return fmt.Sprintf("pong tx=%x src=%v", m.TxID[:6], m.Src)
	case *CallMeMaybe:
		return fmt.Sprintf("call-me-maybe n=%d", len(m.MyNumber))
	}
	return fmt.Sprintf("%T", m)
}
