package netmap

import (
	"maps"
	"reflect"
	"slices"

	"github.com/microlink-go/microlink/internal/tailcfg"
)

// mergeDERPMap returns the DERP map after receiving dm, given the previous
// map old (may be nil). It takes ownership of dm. Fields left nil in dm keep
// their old values; regions sent as JSON null are dropped.
func mergeDERPMap(old, dm *tailcfg.DERPMap) *tailcfg.DERPMap {
	for id, r := range dm.Regions {
		if r == nil {
			delete(dm.Regions, id)
		}
	}
	if old == nil {
		return dm
	}
	if dm.Regions == nil {
		dm.Regions = old.Regions
		dm.OmitDefaultRegions = old.OmitDefaultRegions
	}
	if dm.HomeParams == nil {
		dm.HomeParams = old.HomeParams
	} else if old.HomeParams != nil && dm.HomeParams.RegionScore == nil {
		dm.HomeParams.RegionScore = old.HomeParams.RegionScore
	}
	return dm
}

// cloneDERPMap returns a deep copy of dm.
func cloneDERPMap(dm *tailcfg.DERPMap) *tailcfg.DERPMap {
	if dm == nil {
		return nil
	}
	out := &tailcfg.DERPMap{OmitDefaultRegions: dm.OmitDefaultRegions}
	if hp := dm.HomeParams; hp != nil {
		out.HomeParams = &tailcfg.DERPHomeParams{RegionScore: maps.Clone(hp.RegionScore)}
	}
	if dm.Regions != nil {
		out.Regions = make(map[int]*tailcfg.DERPRegion, len(dm.Regions))
		for id, r := range dm.Regions {
			if r == nil {
				continue
			}
			rc := *r
			rc.Nodes = make([]*tailcfg.DERPNode, 0, len(r.Nodes))
			for _, n := range r.Nodes {
				if n != nil {
					nc := *n
					rc.Nodes = append(rc.Nodes, &nc)
				}
			}
			out.Regions[id] = &rc
		}
	}
	return out
}

// updateFilters applies PacketFilter (the named filter "base") and the
// named PacketFilters, and reports whether the effective rules changed.
func (m *Map) updateFilters(base []tailcfg.FilterRule, named map[string][]tailcfg.FilterRule) bool {
	if base != nil {
		if m.filters == nil {
			m.filters = make(map[string][]tailcfg.FilterRule)
		}
		m.filters["base"] = base
	}
	if named != nil {
		if v, ok := named["*"]; ok && v == nil {
			m.filters = nil
		}
		for name, rules := range named {
			switch {
			case name == "*":
			case rules == nil:
				delete(m.filters, name)
			default:
				if m.filters == nil {
					m.filters = make(map[string][]tailcfg.FilterRule)
				}
				m.filters[name] = rules
			}
		}
	}
	concat := []tailcfg.FilterRule{}
	for _, name := range sortedKeys(m.filters) {
		concat = append(concat, m.filters[name]...)
	}
	changed := !reflect.DeepEqual(concat, m.filter)
	m.filter = slices.Clip(concat)
	return changed
}

// sortedKeys returns the keys of m in order. It sorts by insertion, which
// suits the few keys of filter and capability maps, rather than
// instantiate the generic sorts of package slices for strings.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		i := len(keys)
		keys = append(keys, k)
		for ; i > 0 && keys[i-1] > k; i-- {
			keys[i] = keys[i-1]
		}
		keys[i] = k
	}
	return keys
}
