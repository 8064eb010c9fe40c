// Package netmaptest makes large synthetic netmaps and measures the heap
// while they are decoded, for the scale tests and benchmarks of the map
// decoder.
package netmaptest

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"runtime/metrics"
	"sync"
	"time"

	"github.com/microlink-go/microlink/internal/key"
	"github.com/microlink-go/microlink/internal/tailcfg"
)

func v4(id tailcfg.NodeID) netip.Addr {
	return netip.AddrFrom4([4]byte{100, 64 + byte(id>>16), byte(id >> 8), byte(id)})
}

func v6(id tailcfg.NodeID) netip.Addr {
	return netip.AddrFrom16([16]byte{0xfd, 0x7a, 0x11, 0x5c, 0xa1, 0xe0, 13: byte(id >> 16), 14: byte(id >> 8), 15: byte(id)})
}

func self() *tailcfg.Node {
	return &tailcfg.Node{
		ID: 1 << 30, StableID: "nSELFCNTRL", Name: "me.tail1234.ts.net.", User: 1,
		Key:               key.NodePublic{1},
		Addresses:         []netip.Prefix{netip.MustParsePrefix("100.100.0.1/32")},
		MachineAuthorized: true,
	}
}

// Netmap returns the JSON of a full MapResponse with n peers that
// look like production ones: two addresses, AllowedIPs omitted, 2-4
// endpoints, a hostinfo with hostname and OS, online, random keys.
func Netmap(n int) []byte {
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
	resp := &tailcfg.MapResponse{Node: self(), Domain: "example.com",
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

// Sampler polls HeapObjects and remembers the highest value.
type Sampler struct {
	stop chan struct{}
	done sync.WaitGroup
	max  uint64
}

// HeapObjects returns the bytes of heap objects, live or not yet swept.
func HeapObjects() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// StartSampler starts a Sampler; Finish stops it.
func StartSampler() *Sampler {
	s := &Sampler{stop: make(chan struct{}), max: HeapObjects()}
	s.done.Add(1)
	go func() {
		defer s.done.Done()
		t := time.NewTicker(200 * time.Microsecond)
		defer t.Stop()
		for {
			if v := HeapObjects(); v > s.max {
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

// Finish stops the sampler and returns the highest value seen.
func (s *Sampler) Finish() uint64 {
	close(s.stop)
	s.done.Wait()
	if v := HeapObjects(); v > s.max {
		s.max = v
	}
	return s.max
}

// LiveHeap collects garbage and returns the live heap.
func LiveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}
