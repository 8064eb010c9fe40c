package microlink

import (
	"context"
	"fmt"
	"net/netip"
	"time"
)

// NetcheckReport describes the node's network as a netcheck measured it.
type NetcheckReport struct {
	UDP bool // STUN over UDP works
	// GlobalV4 and GlobalV6 are the node's address as the internet sees
	// it (invalid if not measured).
	GlobalV4, GlobalV6 netip.AddrPort
	// MappingVariesByDestIP, when MappingKnown, tells whether the NAT in
	// front of the node gives each destination a new port: direct paths
	// then rarely work and traffic stays on DERP.
	MappingVariesByDestIP, MappingKnown bool
	PreferredDERP                       int             // the home region
	Regions                             []RegionLatency // fastest first; regions that answered
}

// RegionLatency is one DERP region's measured STUN round trip.
type RegionLatency struct {
	ID         int
	Code, Name string
	Latency    time.Duration
}

// Netcheck measures the node's network now (STUN to every DERP region
// of the netmap, from the node's UDP socket) and returns the report.
func (n *Node) Netcheck(ctx context.Context) (NetcheckReport, error) {
	data, err := n.dataPlane()
	if err != nil {
		return NetcheckReport{}, err
	}
	r, err := data.ms.Netcheck(ctx)
	if err != nil {
		return NetcheckReport{}, publicErr(fmt.Errorf("microlink: netcheck: %w", err))
	}
	out := NetcheckReport{
		UDP: r.UDP, GlobalV4: r.GlobalV4, GlobalV6: r.GlobalV6,
		MappingVariesByDestIP: r.MappingVariesByDestIP, MappingKnown: r.MappingKnown,
		PreferredDERP: r.PreferredDERP,
	}
	dm := n.nm.DERPMap()
	for id, lat := range r.RegionLatency {
		rl := RegionLatency{ID: id, Latency: lat}
		if dm != nil && dm.Regions[id] != nil {
			rl.Code, rl.Name = dm.Regions[id].RegionCode, dm.Regions[id].RegionName
		}
		out.Regions = append(out.Regions, rl)
	}
	// An insertion sort: a netmap has few regions, and a generic sort of
	// this struct type would add 20 KB of code.
	rs := out.Regions
	for i := 1; i < len(rs); i++ {
		for j := i; j > 0 && (rs[j].Latency < rs[j-1].Latency || rs[j].Latency == rs[j-1].Latency && rs[j].ID < rs[j-1].ID); j-- {
			rs[j], rs[j-1] = rs[j-1], rs[j]
		}
	}
	return out, nil
}
