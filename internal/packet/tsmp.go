package packet

import (
	"encoding/binary"
	"errors"
	"net/netip"

	"github.com/microlink-go/microlink/internal/key"
)

// TSMP is the Tailscale Message Protocol: IP protocol 99, handled by the
// Tailscale nodes themselves and never by their IP stacks. The first byte of
// the IP payload is a TSMPType.

// TSMPType is the first byte of a TSMP message.
type TSMPType uint8

// TSMP message types.
const (
	TSMPPing     TSMPType = 'p' // 'p' ‖ 8 bytes of data
	TSMPPong     TSMPType = 'o' // 'o' ‖ the ping's 8 bytes ‖ peerAPI port (uint16)
	TSMPRejected TSMPType = '!' // see TSMPReject
	TSMPDiscoKey TSMPType = 'a' // 'a' ‖ 32-byte disco public key
)

// minTSMPLen is the length of the shortest TSMP message, a rejection
// without flags. Decode rejects shorter TSMP packets.
const minTSMPLen = 7

const (
	tsmpPingLen     = 1 + 8
	tsmpPongLen     = 1 + 8 + 2
	tsmpDiscoKeyLen = 1 + key.Len
)

var errNotTSMPPing = errors.New("packet: not a TSMP ping")

// RejectReason says why a node rejected a connection.
type RejectReason uint8

// Rejection reasons.
const (
	RejectACL            RejectReason = 'A' // the packet filter
	RejectShieldsUp      RejectReason = 'S' // the node accepts no connections
	RejectIPForwarding   RejectReason = 'F' // a subnet router cannot forward
	RejectHostFirewall   RejectReason = 'W' // the target host's firewall
	RejectUnknownTransit RejectReason = 'T' // an app connector has no mapping for the address
)

// TSMPReject is a TSMP message telling a node that its connection was
// rejected. The flow it describes went from the receiver of the message
// (port SrcPort) to the sender (port DstPort).
//
// On the wire: '!' ‖ proto ‖ reason ‖ srcPort ‖ dstPort ‖ optional flags,
// where flag bit 0 is MaybeBroken.
type TSMPReject struct {
	Proto       Proto
	Reason      RejectReason
	SrcPort     uint16
	DstPort     uint16
	MaybeBroken bool // the sender is unsure the flow is blocked
}

// TSMPType returns the type of a TSMP packet and whether p is one.
func (p *Parsed) TSMPType() (TSMPType, bool) {
	if p.Proto != ProtoTSMP || p.Version == 0 || p.Fragment {
		return 0, false
	}
	m := p.Payload()
	if len(m) == 0 {
		return 0, false
	}
	return TSMPType(m[0]), true
}

// tsmp returns the TSMP message of p if it has type typ and at least n bytes.
func (p *Parsed) tsmp(typ TSMPType, n int) ([]byte, bool) {
	if t, ok := p.TSMPType(); !ok || t != typ {
		return nil, false
	}
	m := p.Payload()
	return m, len(m) >= n
}

// TSMPPingData returns the 8 bytes of a TSMP ping and whether p is one.
func (p *Parsed) TSMPPingData() (data [8]byte, ok bool) {
	m, ok := p.tsmp(TSMPPing, tsmpPingLen)
	if ok {
		data = [8]byte(m[1:9])
	}
	return data, ok
}

// TSMPPongData returns the 8 bytes and the peerAPI port (zero if absent) of
// a TSMP pong and whether p is one.
func (p *Parsed) TSMPPongData() (data [8]byte, peerAPIPort uint16, ok bool) {
	m, ok := p.tsmp(TSMPPong, tsmpPingLen)
	if !ok {
		return data, 0, false
	}
	data = [8]byte(m[1:9])
	if len(m) >= tsmpPongLen {
		peerAPIPort = binary.BigEndian.Uint16(m[9:11])
	}
	return data, peerAPIPort, true
}

// TSMPReject returns the rejection a TSMP packet carries and whether p is one.
func (p *Parsed) TSMPReject() (r TSMPReject, ok bool) {
	m, ok := p.tsmp(TSMPRejected, 7)
	if !ok {
		return r, false
	}
	r = TSMPReject{
		Proto:   Proto(m[1]),
		Reason:  RejectReason(m[2]),
		SrcPort: binary.BigEndian.Uint16(m[3:5]),
		DstPort: binary.BigEndian.Uint16(m[5:7]),
	}
	if len(m) > 7 {
		r.MaybeBroken = m[7]&1 != 0
	}
	return r, true
}

// TSMPDiscoKey returns the disco key a TSMP disco key advertisement
// carries and whether p is one.
func (p *Parsed) TSMPDiscoKey() (k key.DiscoPublic, ok bool) {
	m, ok := p.tsmp(TSMPDiscoKey, tsmpDiscoKeyLen)
	if ok {
		k = key.DiscoPublic(m[1:tsmpDiscoKeyLen])
	}
	return k, ok
}

// buildTSMP writes a TSMP packet with an n-byte message and returns the
// message part of b, or an error.
func buildTSMP(b []byte, src, dst netip.Addr, id uint32, n int) ([]byte, int, error) {
	if err := checkRoom(b, src, dst, n); err != nil {
		return nil, 0, err
	}
	hl, err := putIPHeader(b, ProtoTSMP, src, dst, id, n)
	if err != nil {
		return nil, 0, err
	}
	return b[hl : hl+n], hl + n, nil
}

// BuildTSMPPing writes into b a TSMP ping from src to dst and returns its
// length.
func BuildTSMPPing(b []byte, src, dst netip.Addr, data [8]byte) (int, error) {
	m, n, err := buildTSMP(b, src, dst, 0, tsmpPingLen)
	if err != nil {
		return 0, err
	}
	m[0] = byte(TSMPPing)
	copy(m[1:], data[:])
	return n, nil
}

// BuildTSMPPong writes into b the pong answering the TSMP ping ping and
// returns its length. As the reference client does, the reply's IP header
// is the request's with source and destination swapped and the IPv4
// identification or IPv6 flow label inverted bit by bit (a fresh header
// without options: TTL 64, no extension headers). b may be ping's buffer;
// ping then no longer describes it.
func BuildTSMPPong(b []byte, ping *Parsed, peerAPIPort uint16) (int, error) {
	data, ok := ping.TSMPPingData()
	if !ok {
		return 0, errNotTSMPPing
	}
	m, n, err := buildTSMP(b, ping.Dst, ping.Src, ^ipID(ping), tsmpPongLen)
	if err != nil {
		return 0, err
	}
	m[0] = byte(TSMPPong)
	copy(m[1:9], data[:])
	binary.BigEndian.PutUint16(m[9:11], peerAPIPort)
	return n, nil
}

// BuildTSMPReject writes into b a TSMP rejection from src to dst and
// returns its length. The flags byte is written only if a flag is set.
func BuildTSMPReject(b []byte, src, dst netip.Addr, r TSMPReject) (int, error) {
	size := 7
	if r.MaybeBroken {
		size++
	}
	m, n, err := buildTSMP(b, src, dst, 0, size)
	if err != nil {
		return 0, err
	}
	m[0] = byte(TSMPRejected)
	m[1] = byte(r.Proto)
	m[2] = byte(r.Reason)
	binary.BigEndian.PutUint16(m[3:5], r.SrcPort)
	binary.BigEndian.PutUint16(m[5:7], r.DstPort)
	if r.MaybeBroken {
		m[7] = 1
	}
	return n, nil
}

// BuildTSMPDiscoKey writes into b a TSMP advertisement of the disco key k
// from src to dst and returns its length.
func BuildTSMPDiscoKey(b []byte, src, dst netip.Addr, k key.DiscoPublic) (int, error) {
	m, n, err := buildTSMP(b, src, dst, 0, tsmpDiscoKeyLen)
	if err != nil {
		return 0, err
	}
	m[0] = byte(TSMPDiscoKey)
	copy(m[1:], k[:])
	return n, nil
}
