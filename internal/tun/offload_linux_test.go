package tun

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/microlink-go/microlink/internal/bufpool"
	"github.com/microlink-go/microlink/internal/packet"
)

// bigTCP builds an offloaded TCP packet as the host hands it over: n
// payload bytes, the checksum field holding the pseudo header's sum.
func bigTCP(t *testing.T, v6 bool, n int, flags uint8) ([]byte, vnetHdr) {
	t.Helper()
	src, dst := netip.MustParseAddr("100.64.0.1"), netip.MustParseAddr("100.64.0.2")
	ipLen := 20
	if v6 {
		src, dst, ipLen = netip.MustParseAddr("fd7a:115c:a1e0::1"), netip.MustParseAddr("fd7a:115c:a1e0::2"), 40
	}
	tcpLen := 32 // with 12 bytes of options (timestamps)
	pkt := make([]byte, ipLen+tcpLen+n)
	if v6 {
		pkt[0] = 0x60
		binary.BigEndian.PutUint16(pkt[4:], uint16(len(pkt)-40))
		pkt[6], pkt[7] = 6, 64
		copy(pkt[8:], src.AsSlice())
		copy(pkt[24:], dst.AsSlice())
	} else {
		pkt[0] = 0x45
		binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
		binary.BigEndian.PutUint16(pkt[4:], 0x1234)
		pkt[6] = 0x40 // DF
		pkt[8], pkt[9] = 64, 6
		copy(pkt[12:], src.AsSlice())
		copy(pkt[16:], dst.AsSlice())
	}
	tcp := pkt[ipLen:]
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 8080)
	binary.BigEndian.PutUint32(tcp[4:], 0xfffff000) // wraps
	binary.BigEndian.PutUint32(tcp[8:], 777)
	tcp[12] = byte(tcpLen/4) << 4
	tcp[13] = flags
	binary.BigEndian.PutUint16(tcp[14:], 500)
	copy(tcp[20:], []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2})
	r := rand.New(rand.NewPCG(uint64(n), 1))
	for i := range tcp[tcpLen:] {
		tcp[tcpLen+i] = byte(r.Uint32())
	}
	binary.BigEndian.PutUint16(tcp[16:], pseudoPartial(pkt, len(tcp)))
	gso := uint8(gsoTCPv4)
	if v6 {
		gso = gsoTCPv6
	}
	mss := 1280 - ipLen - tcpLen
	return pkt, vnetHdr{flags: vnetNeedsCsum, gsoType: gso, hdrLen: uint16(ipLen + tcpLen), gsoSize: uint16(mss), csumStart: uint16(ipLen), csumOffset: 16}
}

// checkPacket decodes a packet and verifies its checksums.
func checkPacket(t *testing.T, pkt []byte) packet.Parsed {
	t.Helper()
	var p packet.Parsed
	if err := p.Decode(pkt); err != nil {
		t.Fatalf("segment does not decode: %v", err)
	}
	if p.Version == 4 && packet.Checksum(pkt[:20]) != 0 {
		t.Fatal("bad IPv4 header checksum")
	}
	if packet.TransportChecksum(p.Src, p.Dst, packet.ProtoTCP, pkt[p.HeaderLen:]) != 0 {
		t.Fatal("bad TCP checksum")
	}
	return p
}

// TestSegmentCoalesce cuts offloaded TCP packets into segments, checks
// each, and joins them back into the packet they came from.
func TestSegmentCoalesce(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		for _, n := range []int{1, 1000, 1228, 1229, 5000, 65000} {
			big, h := bigTCP(t, v6, n, tcpACK|tcpPSH|tcpFIN|tcpCWR)
			if v6 && n > 65535-60 {
				continue
			}
			orig := bytes.Clone(big)
			var segs [][]byte
			if err := segmentTCP(big, h, make([]byte, 1280), func(p []byte) { segs = append(segs, bytes.Clone(p)) }); err != nil {
				t.Fatal(err)
			}
			if want := (n + int(h.gsoSize) - 1) / int(h.gsoSize); len(segs) != want {
				t.Fatalf("v6 %v, %d bytes: %d segments, want %d", v6, n, len(segs), want)
			}
			var payload []byte
			for i, s := range segs {
				if len(s) > 1280 {
					t.Fatalf("segment of %d bytes", len(s))
				}
				p := checkPacket(t, s)
				f := uint8(p.TCPFlags)
				last := i == len(segs)-1
				if (f&tcpFIN != 0) != last || (f&tcpPSH != 0) != last || (f&tcpCWR != 0) != (i == 0) {
					t.Fatalf("segment %d of %d: flags %#x", i, len(segs), f)
				}
				seq := binary.BigEndian.Uint32(s[p.HeaderLen+4:])
				if want := uint32(0xfffff000) + uint32(len(payload)); seq != want {
					t.Fatalf("segment %d: seq %#x, want %#x", i, seq, want)
				}
				payload = append(payload, s[int(h.hdrLen):]...)
			}
			if !bytes.Equal(payload, orig[h.hdrLen:]) {
				t.Fatal("payload changed")
			}

			// Join them again (without the FIN, which ends a run).
			if len(segs) < 2 {
				continue
			}
			batch := make([]*[]byte, len(segs))
			for i := range segs {
				s := segs[i]
				s[int(h.csumStart)+13] &^= tcpFIN | tcpCWR
				ps := checkFix(s, int(h.csumStart))
				batch[i] = &ps
			}
			d := &Device{gbuf: make([]byte, vnetHdrLen, vnetHdrLen+maxCoalesced), run: make([][]byte, 0, maxBatch)}
			var written [][]byte
			d.writeRawHook = func(b []byte) { written = append(written, bytes.Clone(b)) }
			d.writeBatch(batch)
			if len(written) != 1 {
				t.Fatalf("%d segments written as %d packets", len(segs), len(written))
			}
			wh := parseVnetHdr(written[0])
			out := written[0][vnetHdrLen:]
			if wh.gsoType != h.gsoType || wh.gsoSize != h.gsoSize || wh.hdrLen != h.hdrLen || wh.csumStart != h.csumStart || wh.csumOffset != 16 || wh.flags != vnetNeedsCsum {
				t.Fatalf("coalesced header %+v, want like %+v", wh, h)
			}
			if !bytes.Equal(out[h.hdrLen:], orig[h.hdrLen:]) || len(out) != len(orig) {
				t.Fatal("coalesced payload differs")
			}
			// Completing its checksum as the host would gives a valid packet.
			completeCsum(out, int(wh.csumStart), 16)
			checkPacket(t, out)
		}
	}
}

// checkFix recomputes the TCP checksum after a flag change.
func checkFix(s []byte, tcpOff int) []byte {
	tcp := s[tcpOff:]
	tcp[16], tcp[17] = 0, 0
	binary.BigEndian.PutUint16(tcp[16:], tcpChecksum(s, tcp))
	return s
}

// TestCoalesceRuns: only consecutive segments of one stream join; a gap,
// another stream, a short segment or a PSH ends a run.
func TestCoalesceRuns(t *testing.T) {
	big, h := bigTCP(t, false, 1228*6, tcpACK)
	var segs [][]byte
	segmentTCP(big, h, make([]byte, 1280), func(p []byte) { segs = append(segs, bytes.Clone(p)) })
	other, oh := bigTCP(t, false, 1228*2, tcpACK)
	binary.BigEndian.PutUint16(other[20:], 40001) // another source port
	var others [][]byte
	segmentTCP(other, oh, make([]byte, 1280), func(p []byte) { others = append(others, bytes.Clone(p)) })
	udp := make([]byte, 100)
	n, _ := packet.BuildUDP(udp, netip.MustParseAddrPort("100.64.0.2:1"), netip.MustParseAddrPort("100.64.0.1:2"), []byte("x"))
	udp = udp[:n]
	short := bytes.Clone(segs[3][:len(segs[3])-100])
	binary.BigEndian.PutUint16(short[2:], uint16(len(short)))
	for _, tc := range []struct {
		name string
		pkts [][]byte
		want []int // packets per write
	}{
		{"one stream", segs, []int{6}},
		{"gap", [][]byte{segs[0], segs[1], segs[3], segs[4]}, []int{2, 2}},
		{"interleaved", [][]byte{segs[0], others[0], segs[1], others[1]}, []int{1, 1, 1, 1}},
		{"udp between", [][]byte{segs[0], segs[1], udp, segs[2], segs[3]}, []int{2, 1, 2}},
		{"short ends a run", [][]byte{segs[2], short, segs[4]}, []int{2, 1}},
		{"reordered", [][]byte{segs[1], segs[0]}, []int{1, 1}},
	} {
		batch := make([]*[]byte, len(tc.pkts))
		for i := range tc.pkts {
			p := tc.pkts[i]
			batch[i] = &p
		}
		d := &Device{gbuf: make([]byte, vnetHdrLen, vnetHdrLen+maxCoalesced), run: make([][]byte, 0, maxBatch)}
		var got []int
		d.writeRawHook = func(b []byte) {
			wh := parseVnetHdr(b)
			if wh.gsoType == gsoNone {
				got = append(got, 1)
				return
			}
			got = append(got, (len(b)-vnetHdrLen-int(wh.hdrLen)+int(wh.gsoSize)-1)/int(wh.gsoSize))
		}
		d.writeBatch(batch)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: written as %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestCompleteCsum(t *testing.T) {
	b := make([]byte, 200)
	n, _ := packet.BuildUDP(b, netip.MustParseAddrPort("100.64.0.2:1"), netip.MustParseAddrPort("100.64.0.1:2"), []byte("hello, partial checksum"))
	pkt := b[:n]
	// What the host hands over: the pseudo header's sum in the field.
	binary.BigEndian.PutUint16(pkt[26:], udpPseudoPartial(pkt, n-20))
	if err := completeCsum(pkt, 20, 6); err != nil {
		t.Fatal(err)
	}
	var p packet.Parsed
	if p.Decode(pkt) != nil || packet.TransportChecksum(p.Src, p.Dst, packet.ProtoUDP, pkt[20:]) != 0 {
		t.Fatal("completed checksum is wrong")
	}
	if completeCsum(pkt, 20, 200) == nil || completeCsum(pkt, 300, 0) == nil {
		t.Fatal("out-of-range checksum offsets accepted")
	}
}

func FuzzOffload(f *testing.F) {
	big, h := bigTCP(&testing.T{}, false, 3000, tcpACK)
	b := make([]byte, vnetHdrLen)
	h.put(b)
	f.Add(append(b, big...))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < vnetHdrLen {
			return
		}
		h := parseVnetHdr(data)
		pkt := data[vnetHdrLen:]
		if h.gsoType&^gsoECN == gsoNone {
			if h.flags&vnetNeedsCsum != 0 {
				completeCsum(pkt, int(h.csumStart), int(h.csumOffset))
			}
			return
		}
		segmentTCP(pkt, h, make([]byte, 1280), func(p []byte) {
			if len(p) > 1280 {
				t.Fatalf("segment of %d bytes", len(p))
			}
		})
	})
}

// TestOffloadAllocs: cutting an offloaded packet, queueing packets for the
// device and coalescing them allocate nothing once the pools are warm.
func TestOffloadAllocs(t *testing.T) {
	big, h := bigTCP(t, false, 60000, tcpACK)
	seg := make([]byte, 1280)
	var segs [][]byte
	segmentTCP(big, h, seg, func(p []byte) { segs = append(segs, bytes.Clone(p)) })
	n := 0
	count := func(p []byte) { n += len(p) }
	if a := testing.AllocsPerRun(100, func() { segmentTCP(big, h, seg, count) }); a != 0 {
		t.Errorf("segmentTCP: %v allocations", a)
	}
	d := &Device{mtu: 1280, wq: make(chan *[]byte, writeQueueLen), pool: bufpool.New(writeQueueLen+maxBatch, 1280),
		closing: make(chan struct{}), gbuf: make([]byte, vnetHdrLen, vnetHdrLen+maxCoalesced), run: make([][]byte, 0, maxBatch)}
	d.writeRawHook = count
	batch := make([]*[]byte, 0, maxBatch)
	round := func() {
		for _, s := range segs {
			d.Write(s)
		}
		batch = batch[:0]
		for len(d.wq) > 0 {
			batch = append(batch, <-d.wq)
		}
		d.writeBatch(batch)
		for _, bp := range batch {
			d.pool.Put(bp)
		}
	}
	round()
	if a := testing.AllocsPerRun(100, round); a != 0 {
		t.Errorf("Write and writeBatch: %v allocations", a)
	}
	if d.Stats().Coalesced == 0 {
		t.Error("nothing coalesced")
	}
}

// udpPseudoPartial is pseudoPartial for a UDP datagram in an IPv4 packet.
func udpPseudoPartial(pkt []byte, n int) uint16 {
	var ph [12]byte
	copy(ph[:8], pkt[12:20])
	ph[9] = 17
	binary.BigEndian.PutUint16(ph[10:], uint16(n))
	return ^packet.Checksum(ph[:])
}

// TestCorkedWrites: while corked, the writer is not woken for each
// packet (below half a queue); Uncork wakes it once, and it writes the
// burst coalesced. Uncorked, each packet is written without waiting.
func TestCorkedWrites(t *testing.T) {
	big, h := bigTCP(t, false, 40000, tcpACK)
	seg := make([]byte, 1280)
	var segs [][]byte
	segmentTCP(big, h, seg, func(p []byte) { segs = append(segs, bytes.Clone(p)) })
	writes := make(chan int, 1024)
	d := &Device{mtu: 1280, wq: make(chan *[]byte, writeQueueLen), kick: make(chan struct{}, 1),
		pool: bufpool.New(writeQueueLen+maxBatch, 1280), closing: make(chan struct{}), wdone: make(chan struct{}),
		gbuf: make([]byte, vnetHdrLen, vnetHdrLen+maxCoalesced), run: make([][]byte, 0, maxBatch)}
	d.writeRawHook = func(b []byte) { writes <- len(b) }
	go d.writer()
	defer func() { close(d.closing); <-d.wdone }()

	d.Cork()
	d.Cork() // nested
	for _, s := range segs {
		if _, err := d.Write(s); err != nil {
			t.Fatal(err)
		}
	}
	d.Uncork()
	select {
	case n := <-writes:
		t.Fatalf("a write of %d bytes while still corked", n)
	case <-time.After(50 * time.Millisecond):
	}
	d.Uncork()
	select {
	case n := <-writes:
		if want := vnetHdrLen + len(big); n != want {
			t.Fatalf("wrote %d bytes, want the whole burst coalesced: %d", n, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("nothing written after Uncork")
	}
	d.Uncork() // one too many: harmless
	if _, err := d.Write(segs[0]); err != nil {
		t.Fatal(err)
	}
	select {
	case <-writes:
	case <-time.After(5 * time.Second):
		t.Fatal("an uncorked write not written")
	}
	if d.corks.Load() != 0 {
		t.Fatalf("corks = %d after balanced calls and one extra Uncork", d.corks.Load())
	}
}

// TestWriteWaitsForRoom: Write into a full queue drops nothing; it waits
// until the writer makes room, or fails once the device closes.
func TestWriteWaitsForRoom(t *testing.T) {
	d := &Device{mtu: 1280, wq: make(chan *[]byte, writeQueueLen), kick: make(chan struct{}, 1),
		pool: bufpool.New(writeQueueLen+maxBatch, 1280), closing: make(chan struct{})}
	pkt := make([]byte, 100)
	for range writeQueueLen {
		if _, err := d.Write(pkt); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() { _, err := d.Write(pkt); done <- err }()
	select {
	case err := <-done:
		t.Fatalf("Write into a full queue returned at once: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	select {
	case <-d.kick: // the waiting Write woke the writer
	default:
		t.Fatal("the writer was not woken")
	}
	d.pool.Put(<-d.wq) // the writer takes a packet
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(d.wq) != writeQueueLen || d.Stats().Dropped != 0 {
		t.Fatalf("queued %d, dropped %d", len(d.wq), d.Stats().Dropped)
	}
	go func() { _, err := d.Write(pkt); done <- err }()
	close(d.closing)
	if err := <-done; !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Write after close: %v, want os.ErrClosed", err)
	}
}
