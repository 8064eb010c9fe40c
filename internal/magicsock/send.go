package magicsock

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/microlink-go/microlink/internal/key"
)

// Errors from Send and Ping.
var (
	ErrUnknownPeer = errors.New("magicsock: unknown peer")
	ErrExpired     = errors.New("magicsock: peer's node key has expired")
	ErrNoDisco     = errors.New("magicsock: peer has no disco key")
	ErrNoPath      = errors.New("magicsock: no UDP or DERP path to peer")
)

// Send sends the WireGuard message msg to peer. While a direct path is
// trusted it goes there only; otherwise it goes to the direct path (if
// any) and through DERP, and path discovery starts. It is the WireGuard
// core's transport hook.
func (c *Conn) Send(peerKey key.NodePublic, msg []byte) error {
	select {
	case <-c.closing:
		return ErrClosed
	default:
	}
	snap := c.peerSnap.Load()
	if snap == nil {
		return ErrUnknownPeer
	}
	p := (*snap)[peerKey]
	if p == nil {
		return ErrUnknownPeer
	}
	now := time.Now()
	p.hot.Lock()
	p.hot.lastSend = now
	addr, trusted := p.hot.addr, now.Before(p.hot.until)
	p.hot.Unlock()
	if trusted {
		if addr.Addr() != DERPMagicIP && c.hold(msg, addr) {
			return nil
		}
		return c.counts.directOut.countSent(len(msg), c.writeUDP(msg, addr))
	}
	return c.sendSlow(p, msg, addr, now)
}

// sendSlow sends over the untrusted direct path and DERP together, and
// starts discovery.
func (c *Conn) sendSlow(p *peer, msg []byte, addr netip.AddrPort, now time.Time) error {
	c.mu.Lock()
	if !p.reachable() {
		c.mu.Unlock()
		if p.expired {
			return ErrExpired
		}
		return ErrNoDisco
	}
	region := p.homeDERP
	if region == 0 {
		region = p.derpRegion // reverse route; 0 lets DERP pick its own
	}
	if c.pingCandidates(p, now, false, pingDiscovery, nil) {
		c.sendCallMeMaybe(p, now)
	}
	c.pingUnheardDERP(p, now)
	c.lastActive = now
	c.unlockAndFlush()

	var udpErr error
	if addr.IsValid() {
		udpErr = c.counts.directOut.countSent(len(msg), c.writeUDP(msg, addr))
	}
	derpErr := c.counts.derpOut.countSent(len(msg), c.derp.Send(region, p.key, msg))
	if derpErr == nil || (addr.IsValid() && udpErr == nil) {
		return nil
	}
	if !addr.IsValid() {
		return fmt.Errorf("%w: %v", ErrNoPath, derpErr)
	}
	return errors.Join(udpErr, derpErr)
}

// PingResult is the outcome of Conn.Ping.
type PingResult struct {
	Latency time.Duration
	// Addr is the direct path the pong came back on, or zero if it came
	// through DERP.
	Addr netip.AddrPort
	// DERPRegion is the region the pong came through, or 0 if direct.
	DERPRegion int
	// PeerSaw is our address as the peer saw the ping arrive.
	PeerSaw netip.AddrPort
}

// Direct reports whether the pong came over a direct UDP path.
func (r PingResult) Direct() bool { return r.Addr.IsValid() }

// Ping sends a disco ping to peer, as "tailscale ping" does: to the trusted
// direct path only, or else to the peer's home DERP region and all its
// candidate endpoints. The first pong wins.
func (c *Conn) Ping(ctx context.Context, peerKey key.NodePublic) (PingResult, error) {
	result := make(chan PingResult, 1)
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return PingResult{}, ErrClosed
	}
	p := c.peers[peerKey]
	switch {
	case p == nil:
		c.mu.Unlock()
		return PingResult{}, ErrUnknownPeer
	case p.expired:
		c.mu.Unlock()
		return PingResult{}, ErrExpired
	case p.disco.IsZero():
		c.mu.Unlock()
		return PingResult{}, ErrNoDisco
	}
	now := time.Now()
	if p.best.IsValid() && now.Before(p.bestUntil) {
		c.sendPing(p, p.best, pingCLI, result)
	} else {
		region := p.homeDERP
		if region == 0 {
			region = p.derpRegion
		}
		if region != 0 {
			c.sendPing(p, DERPAddr(region), pingCLI, result)
		}
		sent := c.pingCandidates(p, now, true, pingCLI, result)
		if region == 0 && !sent {
			c.mu.Unlock()
			return PingResult{}, ErrNoPath
		}
	}
	c.unlockAndFlush()
	select {
	case r := <-result:
		return r, nil
	case <-ctx.Done():
		return PingResult{}, ctx.Err()
	case <-c.closing:
		return PingResult{}, ErrClosed
	}
}

// betterAddr reports whether a with latency al should replace b with
// latency bl as the direct path, scoring them as Tailscale does: points
// for being proportionally faster, bonuses for loopback, link-local,
// private and IPv6 addresses, and a point of hysteresis.
func betterAddr(a netip.AddrPort, al time.Duration, b netip.AddrPort, bl time.Duration) bool {
	if a == b {
		return false
	}
	if !b.IsValid() {
		return true
	}
	if !a.IsValid() {
		return false
	}
	var ap, bp int
	if al > bl && al > 0 {
		bp = int(100 - bl*100/al)
	} else if bl > 0 {
		ap = int(100 - al*100/bl)
	}
	ap += addrBonus(a.Addr())
	bp += addrBonus(b.Addr())
	if ap <= 1 && bp == 0 {
		return false
	}
	return ap > bp
}

func addrBonus(a netip.Addr) int {
	n := 0
	switch {
	case a.IsLoopback():
		n = 50
	case a.IsLinkLocalUnicast():
		n = 30
	case a.IsPrivate():
		n = 20
	}
	if a.Is6() {
		n += 10
	}
	return n
}
