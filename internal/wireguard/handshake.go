package wireguard

import (
	"time"
)

// Handshake messages cost a Diffie-Hellman computation or more each, and
// anyone who knows the device's public key can make ones that pass mac1.
// ReceiveFrom therefore only checks their size and mac1 and copies them
// into a bounded queue; the device's handshake goroutine does the rest,
// so transport messages never wait behind handshakes. When the queue is
// full, new handshake messages are dropped.

const (
	// handshakeQueueLen bounds the handshake messages waiting for the
	// handshake goroutine.
	handshakeQueueLen = 128
	// underLoadQueue is the queue length at which the device is under
	// load, whatever the rate of arrivals.
	underLoadQueue = handshakeQueueLen / 8
	// maxSourceLen bounds the source (as given to ReceiveFrom) that a
	// queued handshake message keeps; messages with longer sources are
	// dropped.
	maxSourceLen = 64
)

// handshakeJob is a handshake message waiting in the queue.
type handshakeJob struct {
	msg    [InitiationSize]byte
	n      int
	src    [maxSourceLen]byte
	srcLen int
}

// queueHandshake checks the handshake message msg from src and queues a
// copy of it for the handshake goroutine, or drops it. It does not
// allocate once every job of the queue exists.
func (d *Device) queueHandshake(msg, src []byte) {
	want := InitiationSize
	if messageType(msg) == TypeResponse {
		want = ResponseSize
	}
	if len(msg) != want || len(src) > maxSourceLen || !d.checker.checkMAC1(msg) {
		d.stats.drops.Add(1)
		return
	}
	var j *handshakeJob
	select {
	case j = <-d.hsFree:
	default:
		if d.hsJobs.Add(1) > handshakeQueueLen {
			d.hsJobs.Add(-1)
			d.stats.handshakesDropped.Add(1)
			d.stats.drops.Add(1)
			return
		}
		j = new(handshakeJob)
	}
	j.n = copy(j.msg[:], msg)
	j.srcLen = copy(j.src[:], src)
	d.hsPending.Add(1)
	// There are never more jobs than the queue holds: this never blocks.
	d.hsQueue <- j
}

// handshakeLoop handles the queued handshake messages until Close.
func (d *Device) handshakeLoop() {
	defer d.wg.Done()
	for {
		select {
		case <-d.done:
			return
		case j := <-d.hsQueue:
			d.handleHandshake(j.msg[:j.n], j.src[:j.srcLen])
			d.hsFree <- j
			d.hsPending.Add(-1)
		}
	}
}

// handleHandshake handles one queued handshake message whose mac1 is
// valid.
func (d *Device) handleHandshake(msg, src []byte) {
	now := d.now()
	var p *peer
	if d.admit(msg, src, now) {
		switch messageType(msg) {
		case TypeInitiation:
			p = d.receiveInitiation(msg, src, now)
		case TypeResponse:
			p = d.receiveResponse(msg, src, now)
		}
	}
	if p == nil {
		d.stats.drops.Add(1)
	}
}

// admit decides whether a handshake message with a valid mac1 is
// processed. Under load the message must carry a mac2 made with a cookie
// bound to src, or it is answered with a cookie reply; with a valid mac2,
// which proves the sender receives at src, each sending host is held to
// a token bucket.
func (d *Device) admit(msg, src []byte, now time.Time) bool {
	d.hsMu.Lock()
	if !d.isUnderLoad(now) {
		d.hsMu.Unlock()
		return true
	}
	if !d.checker.checkMAC2(msg, src, now) {
		r, err := d.checker.createReply(msg, src, now)
		d.hsMu.Unlock()
		if err == nil && d.cookieOut != nil {
			var b [CookieReplySize]byte
			r.marshal(&b)
			if d.cookieOut(src, b[:]) == nil {
				d.stats.cookies.Add(1)
			}
		}
		return false
	}
	host := src
	if d.hostOf != nil {
		host = d.hostOf(src)
	}
	ok := d.limiter.allow(host, now)
	d.hsMu.Unlock()
	if !ok {
		d.stats.rateLimited.Add(1)
	}
	return ok
}

// Token bucket of the handshake rate limiter, as in wireguard-go: each
// host may send 20 handshake messages a second, in bursts of 5.
const (
	limitPerSecond = 20
	limitBurst     = 5
	limitCost      = int64(time.Second / limitPerSecond)
	limitMaxTokens = limitCost * limitBurst
	// limitMaxHosts bounds the hosts the limiter remembers.
	limitMaxHosts = 4096
)

// rateLimiter is a token bucket per sending host. Device.hsMu guards it.
type rateLimiter struct {
	hosts map[string]limitEntry
}

type limitEntry struct {
	tokens int64 // nanoseconds of budget
	last   int64 // UnixNano of the last refill
}

// allow takes a token from host's bucket and reports whether there was
// one.
func (l *rateLimiter) allow(host []byte, now time.Time) bool {
	t := now.UnixNano()
	e, ok := l.hosts[string(host)]
	if !ok {
		if l.hosts == nil {
			l.hosts = make(map[string]limitEntry)
		}
		if len(l.hosts) >= limitMaxHosts {
			l.forget(t)
		}
		l.hosts[string(host)] = limitEntry{tokens: limitMaxTokens - limitCost, last: t}
		return true
	}
	e.tokens = min(limitMaxTokens, e.tokens+max(t-e.last, 0))
	e.last = t
	allowed := e.tokens >= limitCost
	if allowed {
		e.tokens -= limitCost
	}
	l.hosts[string(host)] = e
	return allowed
}

// forget drops the hosts whose buckets are full again by now, which the
// limiter would treat as new, and if that frees nothing, one arbitrary
// host.
func (l *rateLimiter) forget(now int64) {
	for h, e := range l.hosts {
		if e.tokens+(now-e.last) >= limitMaxTokens {
			delete(l.hosts, h)
		}
	}
	if len(l.hosts) >= limitMaxHosts {
		for h := range l.hosts {
			delete(l.hosts, h)
			break
		}
	}
}
