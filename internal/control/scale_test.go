package control

import (
	"bytes"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/microlink-go/microlink/internal/netmap"
	"github.com/microlink-go/microlink/internal/netmap/netmaptest"
)

// scaleResult is what receiving one full netmap cost.
type scaleResult struct {
	elapsed     time.Duration
	sampledPeak uint64 // highest heap in use while reading and applying
	retained    uint64 // heap kept afterwards, by the map and the reader
	jsonBytes   int
	zstdBytes   int
}

// measureScale sends a full netmap of n peers through the path the node
// ships: a zstd frame as control sends it, the message reader, the
// streaming decoder and Map.Apply. The frame stands for the network and
// counts in the baseline, not in the figures.
func measureScale(tb testing.TB, n int) scaleResult {
	tb.Helper()
	js := netmaptest.Netmap(n)
	z := zframe(tb, string(js))
	r := scaleResult{jsonBytes: len(js), zstdBytes: len(z) - 4}
	js = nil
	base := netmaptest.LiveHeap()
	mr := newMessageReader(DefaultMaxMessageSize)
	m := netmap.New(netmap.Options{})
	sampler := netmaptest.StartSampler()
	start := time.Now()
	mr.reset(bytes.NewReader(z), true)
	msg, err := mr.next()
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := m.Apply(msg); err != nil {
		tb.Fatal(err)
	}
	r.elapsed = time.Since(start)
	peak := sampler.Finish()
	r.sampledPeak = peak - min(base, peak)
	msg = nil
	if got := m.NumPeers(); got != n {
		tb.Fatalf("map has %d peers, want %d", got, n)
	}
	r.retained = netmaptest.LiveHeap() - base
	runtime.KeepAlive(m)
	runtime.KeepAlive(mr)
	runtime.KeepAlive(z)
	mr.close()
	return r
}

// BenchmarkNetmapScale reports the cost of a full netmap through the
// shipped path (see measureScale): time, heap kept per peer, and the
// highest heap in use while receiving it (garbage not yet collected
// included).
func BenchmarkNetmapScale(b *testing.B) {
	for _, n := range []int{1000, 10000, 50000} {
		b.Run(fmt.Sprintf("peers=%d", n), func(b *testing.B) {
			var r scaleResult
			var total time.Duration
			for b.Loop() {
				b.StopTimer()
				r = measureScale(b, n)
				total += r.elapsed
				b.StartTimer()
			}
			b.ReportMetric(float64(total.Nanoseconds())/float64(b.N)/1e6, "ms/apply")
			b.ReportMetric(float64(r.retained)/float64(n), "retained-B/peer")
			b.ReportMetric(float64(r.sampledPeak)/(1<<20), "sampled-peak-MiB")
			b.ReportMetric(float64(r.jsonBytes)/1e6, "json-MB")
			b.ReportMetric(float64(r.zstdBytes)/1e6, "zstd-MB")
		})
	}
}
