package magicsock

import "time"

// maintain runs the timers: ping timeouts, heartbeats, path probes and
// netchecks. It runs every tick, and sooner when a heartbeat or probe is due.
func (c *Conn) maintain() {
	defer c.wg.Done()
	t := time.NewTimer(c.tm.tick)
	defer t.Stop()
	for {
		select {
		case <-c.closing:
			return
		case <-t.C:
		case <-c.kick:
		}
		now := time.Now()
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return
		}
		c.expirePings(now)
		c.watchPaths()
		next := earliest(c.checkProbes(now), c.heartbeat(now))
		start, full := c.shouldNetcheck(now, c.active(now))
		if start {
			c.wg.Add(1)
			go c.runNetcheck(full)
		}
		c.unlockAndFlush()
		wait := c.tm.tick
		if !next.IsZero() {
			wait = min(wait, max(time.Until(next), 0))
		}
		t.Reset(wait)
	}
}

// active reports whether data went to any peer within sessionActive.
// Conn.mu is held.
func (c *Conn) active(now time.Time) bool {
	if now.Sub(c.lastActive) < c.tm.sessionActive {
		return true
	}
	for _, p := range c.peers {
		if now.Sub(p.lastSend()) < c.tm.sessionActive {
			return true
		}
	}
	return false
}
