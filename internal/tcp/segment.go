package tcp

import (
	"encoding/binary"
	"errors"
	"net/netip"

	"github.com/microlink-go/microlink/internal/packet"
)

// Flag bits of a TCP header.
const (
	flagFIN = packet.TCPFin
	flagSYN = packet.TCPSyn
	flagRST = packet.TCPRst
	flagPSH = packet.TCPPsh
	flagACK = packet.TCPAck
)

// TCP option kinds.
const (
	optEnd    = 0
	optNOP    = 1
	optMSS    = 2
	optWScale = 3
	optSACKOK = 4 // SACK permitted (RFC 2018)
	optSACK   = 5
)

// maxSACKBlocks is how many SACK blocks an ACK carries: all that fit
// without the timestamps option.
const maxSACKBlocks = 4

// maxWScale is the largest window scale shift RFC 7323 allows.
const maxWScale = 14

var (
	errSegment  = errors.New("tcp: malformed segment")
	errChecksum = errors.New("tcp: bad checksum")
	errRoom     = errors.New("tcp: segment does not fit the buffer")
)

// segment is a parsed TCP segment. Payload refers to the parsed buffer.
type segment struct {
	srcPort, dstPort uint16
	seq, ack         uint32
	flags            packet.TCPFlags
	wnd              uint16
	mss              uint16 // 0: no MSS option
	wscale           int8   // -1: no window scale option
	sackOK           bool   // SACK permitted
	sacks            [maxSACKOption]seqRange
	nsacks           int // SACK blocks in sacks
	payload          []byte
}

// maxSACKOption is how many SACK blocks fit in a TCP option.
const maxSACKOption = 4

func (s *segment) has(f packet.TCPFlags) bool { return s.flags&f != 0 }

// len returns the sequence space the segment occupies: its data, SYN and FIN.
func (s *segment) len() uint32 {
	n := uint32(len(s.payload))
	if s.has(flagSYN) {
		n++
	}
	if s.has(flagFIN) {
		n++
	}
	return n
}

// parseSegment parses the TCP segment b sent from src to dst, checking its
// checksum. MSS, window scale and SACK-permitted options are read only
// from SYN segments, the only ones they may appear in, SACK blocks from
// the others; other options are skipped.
func parseSegment(src, dst netip.Addr, b []byte, s *segment) error {
	if len(b) < packet.TCPHeaderLen {
		return errSegment
	}
	off := int(b[12]>>4) * 4
	if off < packet.TCPHeaderLen || off > len(b) {
		return errSegment
	}
	if packet.TransportChecksum(src, dst, packet.ProtoTCP, b) != 0 {
		return errChecksum
	}
	*s = segment{
		srcPort: binary.BigEndian.Uint16(b[0:2]),
		dstPort: binary.BigEndian.Uint16(b[2:4]),
		seq:     binary.BigEndian.Uint32(b[4:8]),
		ack:     binary.BigEndian.Uint32(b[8:12]),
		flags:   packet.TCPFlags(b[13]),
		wnd:     binary.BigEndian.Uint16(b[14:16]),
		wscale:  -1,
		payload: b[off:],
	}
	if s.has(flagSYN) {
		return s.parseOptions(b[packet.TCPHeaderLen:off])
	}
	if off > packet.TCPHeaderLen {
		// Only SACK blocks count outside a SYN. Options that do not
		// parse cost the segment its SACK blocks, not its data.
		if s.parseOptions(b[packet.TCPHeaderLen:off]) != nil {
			s.nsacks = 0
		}
		s.mss, s.wscale, s.sackOK = 0, -1, false
	}
	return nil
}

func (s *segment) parseOptions(o []byte) error {
	for len(o) > 0 {
		switch o[0] {
		case optEnd:
			return nil
		case optNOP:
			o = o[1:]
			continue
		}
		if len(o) < 2 || int(o[1]) < 2 || int(o[1]) > len(o) {
			return errSegment
		}
		switch {
		case o[0] == optMSS && o[1] == 4:
			s.mss = binary.BigEndian.Uint16(o[2:4])
		case o[0] == optWScale && o[1] == 3:
			s.wscale = int8(min(o[2], maxWScale))
		case o[0] == optSACKOK && o[1] == 2:
			s.sackOK = true
		case o[0] == optSACK && (o[1]-2)%8 == 0:
			for b := o[2:o[1]]; len(b) >= 8 && s.nsacks < maxSACKOption; b = b[8:] {
				s.sacks[s.nsacks] = seqRange{binary.BigEndian.Uint32(b), binary.BigEndian.Uint32(b[4:])}
				s.nsacks++
			}
		}
		o = o[o[1]:]
	}
	return nil
}

// header is what an outgoing segment needs besides its payload.
type header struct {
	src, dst netip.AddrPort
	seq, ack uint32
	flags    packet.TCPFlags
	wnd      uint16
	mss      uint16 // 0: no MSS option
	wscale   int8   // -1: no window scale option
	sackOK   bool   // SACK permitted, for SYNs
	sacks    [maxSACKBlocks]seqRange
	nsacks   int // SACK blocks in sacks
	ipID     uint16
}

// optionsLen returns the length of the options h asks for, padded to
// whole words.
func (h *header) optionsLen() int {
	n := 0
	if h.mss != 0 {
		n += 4
	}
	if h.wscale >= 0 {
		n += 4 // NOP and the 3-byte option
	}
	if h.sackOK {
		n += 4 // two NOPs and the 2-byte option
	}
	if h.nsacks > 0 {
		n += 4 + 8*h.nsacks // two NOPs, kind, length, blocks
	}
	return n
}

// buildSegment writes into b an IP packet carrying a TCP segment with
// header h and the payload p1 followed by p2, and returns its length.
func buildSegment(b []byte, h *header, p1, p2 []byte) (int, error) {
	srcIP, dstIP := h.src.Addr(), h.dst.Addr()
	if srcIP.Is4() != dstIP.Is4() || !srcIP.IsValid() {
		return 0, errSegment
	}
	ipLen := packet.IPHeaderLen(srcIP)
	hl := packet.TCPHeaderLen + h.optionsLen()
	tcpLen := hl + len(p1) + len(p2)
	if len(b) < ipLen+tcpLen {
		return 0, errRoom
	}
	t := b[ipLen : ipLen+tcpLen]
	binary.BigEndian.PutUint16(t[0:2], h.src.Port())
	binary.BigEndian.PutUint16(t[2:4], h.dst.Port())
	binary.BigEndian.PutUint32(t[4:8], h.seq)
	binary.BigEndian.PutUint32(t[8:12], h.ack)
	t[12] = byte(hl/4) << 4
	t[13] = byte(h.flags)
	binary.BigEndian.PutUint16(t[14:16], h.wnd)
	t[16], t[17], t[18], t[19] = 0, 0, 0, 0 // checksum, urgent pointer
	o := t[packet.TCPHeaderLen:hl]
	if h.mss != 0 {
		o[0], o[1] = optMSS, 4
		binary.BigEndian.PutUint16(o[2:4], h.mss)
		o = o[4:]
	}
	if h.wscale >= 0 {
		o[0], o[1], o[2], o[3] = optNOP, optWScale, 3, byte(h.wscale)
		o = o[4:]
	}
	if h.sackOK {
		o[0], o[1], o[2], o[3] = optNOP, optNOP, optSACKOK, 2
		o = o[4:]
	}
	if h.nsacks > 0 {
		o[0], o[1], o[2], o[3] = optNOP, optNOP, optSACK, byte(2+8*h.nsacks)
		o = o[4:]
		for _, r := range h.sacks[:h.nsacks] {
			binary.BigEndian.PutUint32(o[0:4], r.start)
			binary.BigEndian.PutUint32(o[4:8], r.end)
			o = o[8:]
		}
	}
	n := copy(t[hl:], p1)
	copy(t[hl+n:], p2)
	binary.BigEndian.PutUint16(t[16:18], packet.TransportChecksum(srcIP, dstIP, packet.ProtoTCP, t))
	var err error
	if srcIP.Is4() {
		err = packet.PutIPv4Header(b, packet.ProtoTCP, srcIP, dstIP, h.ipID, tcpLen)
	} else {
		err = packet.PutIPv6Header(b, packet.ProtoTCP, srcIP, dstIP, 0, tcpLen)
	}
	if err != nil {
		return 0, err
	}
	return ipLen + tcpLen, nil
}
