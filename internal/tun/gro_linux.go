package tun

import (
	"bytes"
	"encoding/binary"

	"github.com/microlink-go/microlink/internal/packet"
)

// Packets from peers reach the device through a queue and one writer
// goroutine. When they come faster than the writer writes them, or in a
// burst the caller corked (Device.Cork), it finds several in the queue at
// once, and joins consecutive TCP segments of one
// stream into a single offloaded packet (receive offload, as a network
// card's GRO does): one write, and one pass through the host's TCP, for
// up to 64 KiB.
const (
	writeQueueLen = 512 // packets waiting for the writer; more wait in Write
	maxBatch      = 64  // packets the writer takes from the queue at once
)

// tcpSeg is what coalescing needs to know of one TCP packet.
type tcpSeg struct {
	ipLen, tcpLen int // header lengths
	payload       int // payload bytes
	seq           uint32
	flags         uint8
}

// parseTCPSeg reads pkt as an IPv4 packet without options or an IPv6
// packet without extension headers, carrying an unfragmented TCP
// segment with a payload; ok is false for anything else.
func parseTCPSeg(pkt []byte) (s tcpSeg, ok bool) {
	if len(pkt) < 40 {
		return s, false
	}
	switch pkt[0] >> 4 {
	case 4:
		if pkt[0]&0x0f != 5 || pkt[9] != 6 || int(binary.BigEndian.Uint16(pkt[2:])) != len(pkt) ||
			binary.BigEndian.Uint16(pkt[6:])&0x3fff != 0 { // MF or an offset
			return s, false
		}
		s.ipLen = 20
	case 6:
		if len(pkt) < 60 || pkt[6] != 6 || int(binary.BigEndian.Uint16(pkt[4:]))+40 != len(pkt) {
			return s, false
		}
		s.ipLen = 40
	default:
		return s, false
	}
	tcp := pkt[s.ipLen:]
	s.tcpLen = int(tcp[12]>>4) * 4
	if s.tcpLen < 20 || s.tcpLen > len(tcp) {
		return s, false
	}
	s.payload = len(tcp) - s.tcpLen
	s.seq = binary.BigEndian.Uint32(tcp[4:])
	s.flags = tcp[13]
	return s, s.payload > 0
}

const tcpACK = 0x10

// follows reports whether TCP packet q, described by sq, continues the
// run that starts with packet p (sp) and ends with a packet described by
// last: same addresses, ports, IP and TCP header fields, acknowledgement,
// window and options; the next sequence number; every packet before it
// full-sized and without PSH, and q no larger.
func follows(p []byte, sp, last tcpSeg, q []byte, sq tcpSeg) bool {
	if sq.ipLen != sp.ipLen || sq.tcpLen != sp.tcpLen || last.flags != tcpACK ||
		(sq.flags != tcpACK && sq.flags != tcpACK|tcpPSH) ||
		last.payload != sp.payload || sq.payload > sp.payload || sq.seq != last.seq+uint32(last.payload) {
		return false
	}
	if sp.ipLen == 20 {
		// TOS; flags and fragment offset; TTL and protocol; addresses.
		if p[1] != q[1] || !bytes.Equal(p[6:10], q[6:10]) || !bytes.Equal(p[12:20], q[12:20]) {
			return false
		}
	} else if !bytes.Equal(p[0:4], q[0:4]) || !bytes.Equal(p[6:40], q[6:40]) {
		return false
	}
	pt, qt := p[sp.ipLen:], q[sq.ipLen:]
	// Ports; acknowledgement; data offset; window; options.
	return bytes.Equal(pt[0:4], qt[0:4]) && bytes.Equal(pt[8:13], qt[8:13]) &&
		bytes.Equal(pt[14:16], qt[14:16]) && bytes.Equal(pt[20:sp.tcpLen], qt[20:sq.tcpLen])
}

// coalesce writes, into buf after room for the virtio header, one TCP
// packet holding the payloads of pkts (a run that follows) and returns it
// with its header in front: it asks the host to take it as segments of
// the first packet's size, with the checksum left to complete.
func coalesce(buf []byte, pkts [][]byte, first tcpSeg) []byte {
	hdrLen := first.ipLen + first.tcpLen
	out := buf[:vnetHdrLen+hdrLen]
	copy(out[vnetHdrLen:], pkts[0][:hdrLen])
	for _, p := range pkts {
		out = append(out, p[hdrLen:]...)
	}
	pkt := out[vnetHdrLen:]
	if first.ipLen == 20 {
		binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
		pkt[10], pkt[11] = 0, 0
		binary.BigEndian.PutUint16(pkt[10:], packet.Checksum(pkt[:20]))
	} else {
		binary.BigEndian.PutUint16(pkt[4:], uint16(len(pkt)-40))
	}
	tcp := pkt[first.ipLen:]
	tcp[13] = pkts[len(pkts)-1][first.ipLen+13] // the last packet's flags: PSH
	// The partial checksum of the pseudo header, which the host completes
	// for each segment it makes.
	binary.BigEndian.PutUint16(tcp[16:], pseudoPartial(pkt, len(tcp)))
	gso := uint8(gsoTCPv4)
	if first.ipLen == 40 {
		gso = gsoTCPv6
	}
	vnetHdr{
		flags: vnetNeedsCsum, gsoType: gso, hdrLen: uint16(hdrLen), gsoSize: uint16(first.payload),
		csumStart: uint16(first.ipLen), csumOffset: 16,
	}.put(out)
	return out
}

// maxCoalesced bounds a coalesced packet: an IP length field's worth.
const maxCoalesced = 65535

// writeBatch writes the packets in order, each run of TCP segments that
// follow one another as one coalesced packet.
func (d *Device) writeBatch(batch []*[]byte) {
	for i := 0; i < len(batch); {
		p := *batch[i]
		j := i + 1
		first, ok := parseTCPSeg(p)
		if ok {
			last, size := first, len(p)
			for j < len(batch) {
				q := *batch[j]
				sq, ok := parseTCPSeg(q)
				if !ok || size+sq.payload > maxCoalesced || !follows(p, first, last, q, sq) {
					break
				}
				last, size = sq, size+sq.payload
				j++
			}
		}
		if j == i+1 {
			d.writeOne(p)
		} else {
			run := d.run[:0]
			for _, bp := range batch[i:j] {
				run = append(run, *bp)
			}
			d.writeRaw(coalesce(d.gbuf, run, first))
			d.coalesced.Add(uint64(j - i))
		}
		i = j
	}
}

// writeOne writes a packet as it is.
func (d *Device) writeOne(pkt []byte) {
	out := d.gbuf[:vnetHdrLen+len(pkt)]
	clear(out[:vnetHdrLen])
	copy(out[vnetHdrLen:], pkt)
	d.writeRaw(out)
}

func (d *Device) writeRaw(b []byte) {
	if d.writeRawHook != nil {
		d.writeRawHook(b)
		return
	}
	if _, err := d.f.Write(b); err != nil {
		d.writeErrs.Add(1)
	}
}

// writer writes what Write queued until the device closes: woken by
// Write (or Uncork), it writes batches until the queue is empty.
func (d *Device) writer() {
	defer close(d.wdone)
	batch := make([]*[]byte, 0, maxBatch)
	for {
		select {
		case <-d.kick:
		case <-d.closing:
			return
		}
		for {
			batch = batch[:0]
		drain:
			for len(batch) < maxBatch {
				select {
				case bp := <-d.wq:
					batch = append(batch, bp)
				default:
					break drain
				}
			}
			if len(batch) == 0 {
				break
			}
			d.writeBatch(batch)
			for _, bp := range batch {
				d.pool.Put(bp)
			}
		}
	}
}
