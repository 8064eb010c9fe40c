package derp

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/microlink-go/microlink/internal/box"
	"github.com/microlink-go/microlink/internal/key"
)

// ProtocolVersion is the DERP protocol version this package speaks.
const ProtocolVersion = 2

// Magic starts the payload of a ServerKey frame.
const Magic = "DERP🔑"

// Wire sizes.
const (
	frameHeaderLen = 1 + 4
	keyLen         = key.Len
	nonceLen       = 24

	// MaxPacketSize is the largest packet the server relays.
	MaxPacketSize = 64 << 10

	// maxFrameSize is the largest frame the client accepts.
	maxFrameSize = 1 << 20
)

// frameType is the first byte of every frame.
type frameType byte

// Frame types (protocol version 2).
const (
	frameServerKey     frameType = 0x01
	frameClientInfo    frameType = 0x02
	frameServerInfo    frameType = 0x03
	frameSendPacket    frameType = 0x04
	frameRecvPacket    frameType = 0x05
	frameKeepAlive     frameType = 0x06
	frameNotePreferred frameType = 0x07
	framePeerGone      frameType = 0x08
	framePeerPresent   frameType = 0x09
	frameForwardPacket frameType = 0x0a
	frameWatchConns    frameType = 0x10
	frameClosePeer     frameType = 0x11
	framePing          frameType = 0x12
	framePong          frameType = 0x13
	frameHealth        frameType = 0x14
	frameRestarting    frameType = 0x15
)

var (
	errShortFrame = errors.New("derp: short frame")
	errFrameSize  = errors.New("derp: frame exceeds size limit")
	errBadMagic   = errors.New("derp: bad server greeting")
)

// appendFrameHeader appends the 5-byte header of a frame of type t whose
// payload is n bytes long.
func appendFrameHeader(b []byte, t frameType, n int) []byte {
	return binary.BigEndian.AppendUint32(append(b, byte(t)), uint32(n))
}

// appendFrame appends a whole frame.
func appendFrame(b []byte, t frameType, payload []byte) []byte {
	return append(appendFrameHeader(b, t, len(payload)), payload...)
}

// parseFrameHeader splits a 5-byte frame header.
func parseFrameHeader(h []byte) (frameType, uint32) {
	return frameType(h[0]), binary.BigEndian.Uint32(h[1:5])
}

// readFrame reads one frame of at most max payload bytes from r, reusing buf
// for the payload when it is large enough.
func readFrame(r io.Reader, max uint32, buf []byte) (frameType, []byte, error) {
	var h [frameHeaderLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	t, n := parseFrameHeader(h[:])
	if n > max {
		return 0, nil, fmt.Errorf("%w: %d bytes", errFrameSize, n)
	}
	if uint32(cap(buf)) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		return 0, nil, err
	}
	return t, buf, nil
}

// parseServerKey returns the server's public key from a ServerKey payload.
func parseServerKey(p []byte) (key.NodePublic, error) {
	if len(p) < len(Magic)+keyLen || string(p[:len(Magic)]) != Magic {
		return key.NodePublic{}, errBadMagic
	}
	return key.NodePublic(p[len(Magic) : len(Magic)+keyLen]), nil
}

// clientInfo is the JSON sealed inside a ClientInfo frame.
type clientInfo struct {
	Version     int    `json:"version,omitempty"`
	CanAckPings bool   `json:"CanAckPings"`
	AppName     string `json:"AppName,omitempty"`
}

// sealClientInfo builds the ClientInfo payload: our public key, a fresh
// nonce and the info JSON boxed from priv to the server's key.
func sealClientInfo(priv key.Private, server key.NodePublic, info clientInfo) ([]byte, error) {
	msg, err := json.Marshal(info)
	if err != nil {
		return nil, err
	}
	var nonce [nonceLen]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, err
	}
	pub := priv.Public()
	out := make([]byte, 0, keyLen+nonceLen+len(msg)+box.Overhead)
	out = append(out, pub[:]...)
	out = append(out, nonce[:]...)
	return box.Seal(out, msg, &nonce, (*[32]byte)(&server), (*[32]byte)(&priv)), nil
}

// ServerInfo is what the server tells a client after the handshake.
type ServerInfo struct {
	Version int `json:"version,omitempty"`

	// TokenBucketBytesPerSecond and TokenBucketBytesBurst, when non-zero,
	// ask the client to limit its own sending rate.
	TokenBucketBytesPerSecond int `json:",omitempty"`
	TokenBucketBytesBurst     int `json:",omitempty"`
}

func (ServerInfo) derpMessage() {}

// openServerInfo opens a ServerInfo payload boxed from the server to priv.
func openServerInfo(priv key.Private, server key.NodePublic, p []byte) (ServerInfo, error) {
	var si ServerInfo
	if len(p) < nonceLen {
		return si, errShortFrame
	}
	var nonce [nonceLen]byte
	copy(nonce[:], p)
	msg, ok := box.Open(nil, p[nonceLen:], &nonce, (*[32]byte)(&server), (*[32]byte)(&priv))
	if !ok {
		return si, errors.New("derp: cannot open ServerInfo box")
	}
	if err := json.Unmarshal(msg, &si); err != nil {
		return si, fmt.Errorf("derp: ServerInfo JSON: %w", err)
	}
	return si, nil
}

// parsePeerGone parses a PeerGone payload. A missing reason byte means
// PeerGoneDisconnected.
func parsePeerGone(p []byte) (PeerGone, error) {
	if len(p) < keyLen {
		return PeerGone{}, errShortFrame
	}
	m := PeerGone{Key: key.NodePublic(p[:keyLen])}
	if len(p) > keyLen {
		m.Reason = PeerGoneReason(p[keyLen])
	}
	return m, nil
}

// parsePeerPresent parses a PeerPresent payload, whose fields after the key
// are each optional.
func parsePeerPresent(p []byte) (PeerPresent, error) {
	if len(p) < keyLen {
		return PeerPresent{}, errShortFrame
	}
	m := PeerPresent{Key: key.NodePublic(p[:keyLen])}
	p = p[keyLen:]
	if len(p) < 18 {
		return m, nil
	}
	m.AddrPort = netip.AddrPortFrom(netip.AddrFrom16([16]byte(p[:16])).Unmap(), binary.BigEndian.Uint16(p[16:18]))
	p = p[18:]
	if len(p) < 1 {
		return m, nil
	}
	m.Flags = p[0]
	return m, nil
}

// parseRestarting parses a Restarting payload.
func parseRestarting(p []byte) (Restarting, error) {
	if len(p) < 8 {
		return Restarting{}, errShortFrame
	}
	return Restarting{
		ReconnectIn: time.Duration(binary.BigEndian.Uint32(p[0:4])) * time.Millisecond,
		TryFor:      time.Duration(binary.BigEndian.Uint32(p[4:8])) * time.Millisecond,
	}, nil
}
