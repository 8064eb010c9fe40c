package magicsock

import (
	"net/netip"
	"sync/atomic"
	"time"
)

// A direct path whose disco pings go unanswered for a moment may still
// carry the peer's WireGuard traffic: a burst of loss took the ping or its
// pong, not the path. The Conn notes when WireGuard datagrams last came
// over each trusted path, and a heartbeat left unanswered on a path that
// still brings traffic does not end its trust early (see checkProbes):
// the trust then runs its course, trustUDP after the last pong, as
// tailscaled keeps a path. A path that brings nothing is still given up
// after the loss timeout.

// arrivals holds, for each watched path, when a WireGuard datagram last
// came over it (clock, in nanoseconds).
type arrivals map[netip.AddrPort]*atomic.Int64

var clockStart = time.Now()

func clock(t time.Time) int64 { return int64(t.Sub(clockStart)) }

// noteArrival records a WireGuard datagram from src, read at time now
// (clock; 0 to read the clock here), if src is watched.
func (c *Conn) noteArrival(src netip.AddrPort, now int64) {
	if w := c.watched.Load(); w != nil {
		if a := (*w)[src]; a != nil {
			if now == 0 {
				now = clock(time.Now())
			}
			a.Store(now)
		}
	}
}

// watchPaths makes the watched paths the peers' current direct paths,
// keeping what was noted for those already watched. Conn.mu is held.
func (c *Conn) watchPaths() {
	old := c.watched.Load()
	n, same := 0, old != nil
	for _, p := range c.peers {
		if p.best.IsValid() {
			n++
			same = same && (*old)[p.best] != nil
		}
	}
	if same && len(*old) == n || old == nil && n == 0 {
		return
	}
	w := make(arrivals, n)
	for _, p := range c.peers {
		if !p.best.IsValid() {
			continue
		}
		if old != nil && (*old)[p.best] != nil {
			w[p.best] = (*old)[p.best]
		} else {
			w[p.best] = new(atomic.Int64)
		}
	}
	c.watched.Store(&w)
}

// arrivedSince reports whether a WireGuard datagram came over addr after t.
func (c *Conn) arrivedSince(addr netip.AddrPort, t time.Time) bool {
	w := c.watched.Load()
	if w == nil {
		return false
	}
	a := (*w)[addr]
	return a != nil && a.Load() > clock(t)
}
