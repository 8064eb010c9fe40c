package disco

import (
	"encoding/binary"
	"net/netip"

	"github.com/microlink-go/microlink/internal/key"
)

// TxIDLen is the length of a ping transaction ID.
const TxIDLen = 12

// Ping asks the receiver to answer with a Pong carrying the same TxID.
type Ping struct {
	TxID [TxIDLen]byte
	// NodeKey is the sender's node public key. Zero means absent: it is then
	// left off the wire, as older senders do.
	NodeKey key.NodePublic
	// Padding is the number of zero bytes appended, used to probe path MTU.
	Padding int
}

// AppendMarshal implements Message.
func (m *Ping) AppendMarshal(b []byte) []byte {
	n := TxIDLen + max(m.Padding, 0)
	hasKey := !m.NodeKey.IsZero()
	if hasKey {
		n += key.Len
	}
	b, p := appendHeader(b, TypePing, n)
	copy(p, m.TxID[:])
	if hasKey {
		copy(p[TxIDLen:], m.NodeKey[:])
	}
	return b
}

func parsePing(p []byte) (*Ping, error) {
	if len(p) < TxIDLen {
		return nil, ErrShort
	}
	m := new(Ping)
	copy(m.TxID[:], p)
	p = p[TxIDLen:]
	// A zero key is absent, as AppendMarshal writes it: its bytes are
	// padding, so that the message keeps its size when sent again.
	if len(p) >= key.Len {
		copy(m.NodeKey[:], p)
		if !m.NodeKey.IsZero() {
			p = p[key.Len:]
		}
	}
	m.Padding = len(p)
	return m, nil
}

// Pong answers a Ping. Src is the address the Ping was received from, as
// the replier saw it.
type Pong struct {
	TxID [TxIDLen]byte
	Src  netip.AddrPort
}

const pongLen = TxIDLen + endpointLen

// AppendMarshal implements Message.
func (m *Pong) AppendMarshal(b []byte) []byte {
	b, p := appendHeader(b, TypePong, pongLen)
	copy(p, m.TxID[:])
	putAddrPort(p[TxIDLen:], m.Src)
	return b
}

func parsePong(p []byte) (*Pong, error) {
	if len(p) < pongLen {
		return nil, ErrShort
	}
	m := new(Pong)
	copy(m.TxID[:], p)
	m.Src = getAddrPort(p[TxIDLen:])
	return m, nil
}

// CallMeMaybe, sent only over DERP, lists the sender's endpoints and asks
// the receiver to ping them, opening NAT mappings from both sides at once.
type CallMeMaybe struct {
	MyNumber []netip.AddrPort
}

// AppendMarshal implements Message.
func (m *CallMeMaybe) AppendMarshal(b []byte) []byte {
	b, p := appendHeader(b, TypeCallMeMaybe, endpointLen*len(m.MyNumber))
	appendAddrPorts(p, m.MyNumber)
	return b
}

// parseCallMeMaybe never fails: a message of an unknown version or with a
// payload that is not a non-zero multiple of 18 bytes carries no endpoints.
func parseCallMeMaybe(ver byte, p []byte) *CallMeMaybe {
	m := new(CallMeMaybe)
	if ver != version0 || len(p) == 0 || len(p)%endpointLen != 0 {
		return m
	}
	m.MyNumber = getAddrPorts(p)
	return m
}

// ChallengeLen is the length of a relay bind challenge.
const ChallengeLen = 32

// BindUDPRelayEndpointCommon is the body shared by the three messages of
// the peer-relay bind handshake.
type BindUDPRelayEndpointCommon struct {
	VNI        uint32
	Generation uint32
	RemoteKey  key.DiscoPublic
	Challenge  [ChallengeLen]byte
}

const bindCommonLen = 4 + 4 + key.Len + ChallengeLen

func (m *BindUDPRelayEndpointCommon) appendMarshal(b []byte, t MessageType) []byte {
	b, p := appendHeader(b, t, bindCommonLen)
	binary.BigEndian.PutUint32(p, m.VNI)
	binary.BigEndian.PutUint32(p[4:], m.Generation)
	copy(p[8:], m.RemoteKey[:])
	copy(p[8+key.Len:], m.Challenge[:])
	return b
}

func (m *BindUDPRelayEndpointCommon) decode(p []byte) error {
	if len(p) < bindCommonLen {
		return ErrShort
	}
	m.VNI = binary.BigEndian.Uint32(p)
	m.Generation = binary.BigEndian.Uint32(p[4:])
	copy(m.RemoteKey[:], p[8:])
	copy(m.Challenge[:], p[8+key.Len:])
	return nil
}

// BindUDPRelayEndpoint opens the bind handshake with a peer relay.
type BindUDPRelayEndpoint struct{ BindUDPRelayEndpointCommon }

// BindUDPRelayEndpointChallenge is the relay's answer to BindUDPRelayEndpoint.
type BindUDPRelayEndpointChallenge struct{ BindUDPRelayEndpointCommon }

// BindUDPRelayEndpointAnswer echoes the challenge back to the relay.
type BindUDPRelayEndpointAnswer struct{ BindUDPRelayEndpointCommon }

// AppendMarshal implements Message.
func (m *BindUDPRelayEndpoint) AppendMarshal(b []byte) []byte {
	return m.appendMarshal(b, TypeBindUDPRelayEndpoint)
}

// AppendMarshal implements Message.
func (m *BindUDPRelayEndpointChallenge) AppendMarshal(b []byte) []byte {
	return m.appendMarshal(b, TypeBindUDPRelayEndpointChallenge)
}

// AppendMarshal implements Message.
func (m *BindUDPRelayEndpointAnswer) AppendMarshal(b []byte) []byte {
	return m.appendMarshal(b, TypeBindUDPRelayEndpointAnswer)
}

// UDPRelayEndpoint describes an endpoint allocated on a peer relay server.
// Lifetimes are nanoseconds on the wire.
type UDPRelayEndpoint struct {
	ServerDisco         key.DiscoPublic
	ClientDisco         [2]key.DiscoPublic
	LamportID           uint64
	VNI                 uint32
	BindLifetime        int64
	SteadyStateLifetime int64
	AddrPorts           []netip.AddrPort
}

const relayEndpointFixedLen = 3*key.Len + 8 + 4 + 8 + 8

func (m *UDPRelayEndpoint) wireLen() int { return relayEndpointFixedLen + endpointLen*len(m.AddrPorts) }

func (m *UDPRelayEndpoint) encode(p []byte) {
	copy(p, m.ServerDisco[:])
	copy(p[key.Len:], m.ClientDisco[0][:])
	copy(p[2*key.Len:], m.ClientDisco[1][:])
	p = p[3*key.Len:]
	binary.BigEndian.PutUint64(p, m.LamportID)
	binary.BigEndian.PutUint32(p[8:], m.VNI)
	binary.BigEndian.PutUint64(p[12:], uint64(m.BindLifetime))
	binary.BigEndian.PutUint64(p[20:], uint64(m.SteadyStateLifetime))
	appendAddrPorts(p[28:], m.AddrPorts)
}

// decode needs at least one address and a whole number of them.
func (m *UDPRelayEndpoint) decode(p []byte) error {
	if len(p) < relayEndpointFixedLen+endpointLen || (len(p)-relayEndpointFixedLen)%endpointLen != 0 {
		return ErrShort
	}
	copy(m.ServerDisco[:], p)
	copy(m.ClientDisco[0][:], p[key.Len:])
	copy(m.ClientDisco[1][:], p[2*key.Len:])
	p = p[3*key.Len:]
	m.LamportID = binary.BigEndian.Uint64(p)
	m.VNI = binary.BigEndian.Uint32(p[8:])
	m.BindLifetime = int64(binary.BigEndian.Uint64(p[12:]))
	m.SteadyStateLifetime = int64(binary.BigEndian.Uint64(p[20:]))
	m.AddrPorts = getAddrPorts(p[28:])
	return nil
}

// CallMeMaybeVia offers a path through a peer relay.
type CallMeMaybeVia struct{ UDPRelayEndpoint }

// AppendMarshal implements Message.
func (m *CallMeMaybeVia) AppendMarshal(b []byte) []byte {
	b, p := appendHeader(b, TypeCallMeMaybeVia, m.wireLen())
	m.encode(p)
	return b
}

// AllocateUDPRelayEndpointRequest asks a peer relay for an endpoint.
type AllocateUDPRelayEndpointRequest struct {
	ClientDisco [2]key.DiscoPublic
	Generation  uint32
}

const allocateRequestLen = 2*key.Len + 4

// AppendMarshal implements Message.
func (m *AllocateUDPRelayEndpointRequest) AppendMarshal(b []byte) []byte {
	b, p := appendHeader(b, TypeAllocateUDPRelayEndpointRequest, allocateRequestLen)
	copy(p, m.ClientDisco[0][:])
	copy(p[key.Len:], m.ClientDisco[1][:])
	binary.BigEndian.PutUint32(p[2*key.Len:], m.Generation)
	return b
}

func parseAllocateRequest(ver byte, p []byte) (*AllocateUDPRelayEndpointRequest, error) {
	m := new(AllocateUDPRelayEndpointRequest)
	if ver != version0 {
		return m, nil
	}
	if len(p) < allocateRequestLen {
		return nil, ErrShort
	}
	copy(m.ClientDisco[0][:], p)
	copy(m.ClientDisco[1][:], p[key.Len:])
	m.Generation = binary.BigEndian.Uint32(p[2*key.Len:])
	return m, nil
}

// AllocateUDPRelayEndpointResponse answers an AllocateUDPRelayEndpointRequest.
type AllocateUDPRelayEndpointResponse struct {
	Generation uint32
	UDPRelayEndpoint
}

// AppendMarshal implements Message.
func (m *AllocateUDPRelayEndpointResponse) AppendMarshal(b []byte) []byte {
	b, p := appendHeader(b, TypeAllocateUDPRelayEndpointResponse, 4+m.wireLen())
	binary.BigEndian.PutUint32(p, m.Generation)
	m.encode(p[4:])
	return b
}

func parseAllocateResponse(ver byte, p []byte) (*AllocateUDPRelayEndpointResponse, error) {
	m := new(AllocateUDPRelayEndpointResponse)
	if ver != version0 {
		return m, nil
	}
	if len(p) < 4 {
		return nil, ErrShort
	}
	m.Generation = binary.BigEndian.Uint32(p)
	if err := m.decode(p[4:]); err != nil {
		return nil, err
	}
	return m, nil
}
