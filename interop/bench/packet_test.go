package bench

import (
	"encoding/binary"
	"net/netip"
	"runtime"
	"testing"
)

// packetSize is the size of the inner IP packets the data plane
// benchmarks carry: the IPv6 minimum MTU, a common tunnel payload.
const packetSize = 1280

var (
	addrA = netip.MustParseAddr("100.64.0.1")
	addrB = netip.MustParseAddr("100.64.0.2")
)

// udpPacket returns an IPv4/UDP packet of n bytes from src to dst with a
// valid IPv4 header checksum.
func udpPacket(src, dst netip.Addr, n int) []byte {
	p := make([]byte, n)
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(n))
	p[8] = 64
	p[9] = 17
	s, d := src.As4(), dst.As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(p[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(p[10:], ^uint16(sum))
	binary.BigEndian.PutUint16(p[20:], 40000)
	binary.BigEndian.PutUint16(p[22:], 40001)
	binary.BigEndian.PutUint16(p[24:], uint16(n-20))
	for i := 28; i < n; i++ {
		p[i] = byte(i)
	}
	return p
}

// countAllocs starts counting heap allocations of the whole process; the
// returned func reports them per packet as the metric allocs/pkt. Unlike
// -benchmem's allocs/op it is not rounded down, and it sees allocations
// made by every goroutine of a pipeline.
func countAllocs(b *testing.B) (stop func()) {
	c := &allocCounter{b: b}
	stop = c.stop // allocated before the count starts
	runtime.ReadMemStats(&c.ms)
	c.start = c.ms.Mallocs
	return stop
}

type allocCounter struct {
	b     *testing.B
	ms    runtime.MemStats
	start uint64
}

func (c *allocCounter) stop() {
	c.b.StopTimer()
	runtime.ReadMemStats(&c.ms)
	c.b.ReportMetric(float64(c.ms.Mallocs-c.start)/float64(c.b.N), "allocs/pkt")
}
