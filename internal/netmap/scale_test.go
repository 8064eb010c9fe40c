package netmap

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"runtime/metrics"
	"sync"
	"testing"
	"time"

	"github.com/microlink-go/microlink/internal/key"
	"github.com/microlink-go/microlink/internal/tailcfg"
)

// syntheticNetmap returns the JSON of a full MapResponse with n peers that
// look like production ones: two addresses, AllowedIPs omitted, 2-4
// endpoints, a hostinfo with hostname and OS, online, random keys.
func syntheticNetmap(n int) []byte {
	rng := rand.New(rand.NewPCG(1, uint64(n)))
	randKey := func() (k key.Public) {
		for i := range k {
			k[i] = byte(rng.Uint32())
		}
		return k
	}
	oses := []string{"linux", "windows", "macOS", "iOS", "android"}
	expiry := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	seen := time.Date(2025, 6, 1, 8, 30, 0, 0, time.UTC)
	resp := &tailcfg.MapResponse{Node: selfNode(), Domain: "example.com",
		DERPMap: &tailcfg.DERPMap{Regions: map[int]*tailcfg.DERPRegion{1: {RegionID: 1, RegionCode: "nyc", Nodes: []*tailcfg.DERPNode{{Name: "1a", RegionID: 1, HostName: "derp1.example.com"}}}}}}
	for i := range n {
		id := tailcfg.NodeID(i + 1)
		online := rng.IntN(3) > 0
		eps := make([]netip.AddrPort, 2+rng.IntN(3))
		for j := range eps {
			var ip [4]byte
			for k := range ip {
				ip[k] = byte(rng.Uint32())
			}
			eps[j] = netip.AddrPortFrom(netip.AddrFrom4(ip), uint16(1024+rng.IntN(60000)))
		}
		home := 1 + rng.IntN(20)
		resp.Peers = append(resp.Peers, &tailcfg.Node{
			ID:                id,
			StableID:          fmt.Sprintf("n%08xCNTRL", rng.Uint32()),
			Name:              fmt.Sprintf("host-%d.tail1234.ts.net.", id),
			User:              tailcfg.UserID(1 + rng.IntN(50)),
			Key:               key.NodePublic(randKey()),
			KeyExpiry:         expiry.Add(time.Duration(rng.IntN(1e6)) * time.Second),
			Machine:           key.MachinePublic(randKey()),
			DiscoKey:          key.DiscoPublic(randKey()),
			Addresses:         []netip.Prefix{netip.PrefixFrom(v4(id), 32), netip.PrefixFrom(v6(id), 128)},
			Endpoints:         eps,
			HomeDERP:          home,
			LegacyDERPString:  fmt.Sprintf("127.3.3.40:%d", home),
			Hostinfo:          &tailcfg.Hostinfo{Hostname: fmt.Sprintf("host-%d", id), OS: oses[rng.IntN(len(oses))]},
			Created:           seen.Add(-time.Duration(rng.IntN(1e7)) * time.Second),
			Online:            &online,
			LastSeen:          &seen,
			MachineAuthorized: true,
			Cap:               115,
		})
	}
	b, err := json.Marshal(resp)
	if err != nil {
		panic(err)
	}
	return b
}

// heapSampler polls the live heap object bytes and remembers the maximum.
type heapSampler struct {
	stop chan struct{}
	done sync.WaitGroup
	max  uint64
}

func heapObjects() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func startSampler() *heapSampler {
	s := &heapSampler{stop: make(chan struct{}), max: heapObjects()}
	s.done.Add(1)
	go func() {
		defer s.done.Done()
		t := time.NewTicker(200 * time.Microsecond)
		defer t.Stop()
		for {
			if v := heapObjects(); v > s.max {
				s.max = v
			}
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *heapSampler) finish() uint64 {
	close(s.stop)
	s.done.Wait()
	if v := heapObjects(); v > s.max {
		s.max = v
	}
	return s.max
}

func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// scaleResult is what one decode-and-apply of a synthetic netmap cost.
type scaleResult struct {
	elapsed     time.Duration
	livePeak    uint64 // largest live heap at GC checkpoints, JSON included
	sampledPeak uint64 // largest heap seen while decoding and applying
	retained    uint64 // heap kept by the Map alone
	jsonBytes   int
}

// measureScale decodes js (n peers) and applies it to a fresh Map, with
// json.Unmarshal and Apply or, if streaming, ApplyJSON. The heap is
// measured relative to a baseline taken before js was built.
func measureScale(tb testing.TB, n int, streaming bool) scaleResult {
	tb.Helper()
	base := liveHeap()
	js := syntheticNetmap(n)
	liveHeap()
	r := scaleResult{jsonBytes: len(js)}
	var m *Map
	sampler := startSampler()
	start := time.Now()
	m = New(Options{})
	if streaming {
		if _, err := m.ApplyJSON(bytes.NewReader(js)); err != nil {
			tb.Fatal(err)
		}
		r.elapsed = time.Since(start)
		r.sampledPeak = sampler.finish()
		r.livePeak = liveHeap()
	} else {
		resp := new(tailcfg.MapResponse)
		if err := json.Unmarshal(js, resp); err != nil {
			tb.Fatal(err)
		}
		decoded := time.Since(start)
		r.sampledPeak = sampler.finish()
		afterDecode := liveHeap()
		sampler = startSampler()
		start = time.Now()
		if _, err := m.Apply(resp); err != nil {
			tb.Fatal(err)
		}
		r.elapsed = decoded + time.Since(start)
		r.sampledPeak = max(r.sampledPeak, sampler.finish())
		r.livePeak = max(afterDecode, liveHeap())
		runtime.KeepAlive(resp)
	}
	runtime.KeepAlive(js)
	js = nil
	if got := m.NumPeers(); got != n {
		tb.Fatalf("map has %d peers, want %d", got, n)
	}
	r.retained = liveHeap() - base
	r.livePeak -= base
	r.sampledPeak -= min(base, r.sampledPeak)
	runtime.KeepAlive(m)
	return r
}

func TestRetainedPerPeer(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 10k-peer netmap")
	}
	const n = 10000
	for _, streaming := range []bool{false, true} {
		r := measureScale(t, n, streaming)
		per := r.retained / n
		t.Logf("streaming=%v: retained %d B/peer, live peak %.1f MB, sampled peak %.1f MB, %v",
			streaming, per, float64(r.livePeak)/1e6, float64(r.sampledPeak)/1e6, r.elapsed)
		if per > 1024 {
			t.Errorf("streaming=%v: retained %d B/peer, want <= 1024", streaming, per)
		}
	}
}

func BenchmarkNetmapScale(b *testing.B) {
	for _, n := range []int{1000, 10000, 50000} {
		for _, streaming := range []bool{false, true} {
			name := fmt.Sprintf("peers=%d/decode=unmarshal", n)
			if streaming {
				name = fmt.Sprintf("peers=%d/decode=stream", n)
			}
			b.Run(name, func(b *testing.B) {
				var r scaleResult
				var total time.Duration
				for b.Loop() {
					b.StopTimer()
					r = measureScale(b, n, streaming)
					total += r.elapsed
					b.StartTimer()
				}
				b.ReportMetric(float64(total.Nanoseconds())/float64(b.N)/1e6, "ms/apply")
				b.ReportMetric(float64(r.retained)/float64(n), "retained-B/peer")
				b.ReportMetric(float64(r.livePeak)/1e6, "peak-MB")
				b.ReportMetric(float64(r.sampledPeak)/1e6, "sampled-peak-MB")
				b.ReportMetric(float64(r.jsonBytes)/1e6, "json-MB")
			})
		}
	}
}

// BenchmarkDelta measures applying one small patch to a 50k-peer map.
func BenchmarkDelta(b *testing.B) {
	m := New(Options{})
	if _, err := m.ApplyJSON(bytes.NewReader(syntheticNetmap(50000))); err != nil {
		b.Fatal(err)
	}
	eps := []netip.AddrPort{netip.MustParseAddrPort("203.0.113.1:41641")}
	online := true
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		nk := nodeKey(tailcfg.NodeID(i))
		resp := &tailcfg.MapResponse{PeersChangedPatch: []*tailcfg.PeerChange{{NodeID: tailcfg.NodeID(1 + i%50000), Endpoints: eps, Key: &nk, Online: &online}}}
		if _, err := m.Apply(resp); err != nil {
			b.Fatal(err)
		}
	}
}
