package magicsock

import (
	"context"
	"errors"
	"maps"
	"net/netip"
	"time"
)

// NetReport is what a netcheck found out about the node's network, as
// "tailscale netcheck" shows it.
type NetReport struct {
	At       time.Time
	UDP      bool           // a STUN server answered over UDP
	GlobalV4 netip.AddrPort // the node's address and port as STUN servers see them
	GlobalV6 netip.AddrPort
	// MappingVariesByDestIP is known once two IPv4 STUN servers answered:
	// true if they saw different mapped addresses (a NAT that maps each
	// destination to a new port, through which direct paths rarely work).
	MappingVariesByDestIP, MappingKnown bool
	PreferredDERP                       int                   // the home region
	RegionLatency                       map[int]time.Duration // per region that answered
}

// NetReport returns the report of the last finished netcheck, if any.
func (c *Conn) NetReport() (NetReport, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.netReportLocked()
}

func (c *Conn) netReportLocked() (NetReport, bool) {
	rep := c.nc.last
	if rep == nil {
		return NetReport{}, false
	}
	return NetReport{
		At:                    rep.start,
		UDP:                   len(rep.latency) > 0,
		GlobalV4:              rep.global4,
		GlobalV6:              rep.global6,
		MappingVariesByDestIP: rep.v4Varies,
		MappingKnown:          rep.v4Answers >= 2,
		PreferredDERP:         c.home,
		RegionLatency:         maps.Clone(rep.latency),
	}, true
}

// ErrNoDERPMap is returned by Netcheck before control sent a DERP map.
var ErrNoDERPMap = errors.New("magicsock: no DERP map yet")

// Netcheck runs a full netcheck now (or joins the one running) and
// returns its report.
func (c *Conn) Netcheck(ctx context.Context) (NetReport, error) {
	c.mu.Lock()
	if c.derpMap == nil {
		c.mu.Unlock()
		return NetReport{}, ErrNoDERPMap
	}
	prev := c.nc.last
	c.nc.forceFull = true
	c.nc.nextRun = time.Time{}
	c.mu.Unlock()
	c.wake()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return NetReport{}, ctx.Err()
		case <-c.closing:
			return NetReport{}, errors.New("magicsock: closed")
		case <-t.C:
		}
		c.mu.Lock()
		if c.nc.last != prev && c.nc.last != nil {
			r, _ := c.netReportLocked()
			c.mu.Unlock()
			return r, nil
		}
		c.mu.Unlock()
	}
}
