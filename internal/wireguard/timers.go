package wireguard

import (
	"math"
	"time"
)

// timerLoop runs the timers of all peers. It sleeps until the earliest
// deadline or until a peer arms an earlier one.
func (d *Device) timerLoop() {
	defer d.wg.Done()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		next := d.evaluateTimers()
		wait := time.Hour
		if !next.IsZero() {
			wait = max(next.Sub(d.now()), 0)
		}
		t.Reset(wait)
		select {
		case <-d.done:
			return
		case <-t.C:
		case <-d.kick:
		}
	}
}

// EvaluateTimers runs the timer work that is due at the device's current
// time (Config.Now). The device calls it itself; tests that move a fake
// clock call it to make the device notice.
func (d *Device) EvaluateTimers() { d.evaluateTimers() }

// evaluateTimers runs due timers and returns the earliest pending
// deadline, or zero if none.
func (d *Device) evaluateTimers() time.Time {
	d.timerMu.Lock()
	defer d.timerMu.Unlock()
	d.nextWake.Store(0) // a deadline armed from now on kicks the loop
	d.mu.RLock()
	if d.closed {
		d.mu.RUnlock()
		return time.Time{}
	}
	d.scratch = d.scratch[:0]
	for _, p := range d.peers {
		d.scratch = append(d.scratch, p)
	}
	d.mu.RUnlock()

	now := d.now()
	var next time.Time
	for i, p := range d.scratch {
		if t := p.runTimers(now); !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
		d.scratch[i] = nil
	}
	if next.IsZero() {
		d.nextWake.Store(math.MaxInt64)
	} else {
		d.nextWake.Store(next.UnixNano())
	}
	return next
}

func due(t, now time.Time) bool { return !t.IsZero() && !now.Before(t) }

// runTimers fires p's due timers and returns its earliest pending one.
func (p *peer) runTimers(now time.Time) time.Time {
	p.mu.Lock()
	st := p.st
	if st == nil || p.removed {
		p.mu.Unlock()
		return time.Time{}
	}
	var init []byte
	keepalive := false
	if due(st.retransmitAt, now) {
		st.retransmitAt = time.Time{}
		if st.attempts > maxHandshakeAttempts {
			// Give up: drop what waits for the session and let the state
			// expire unless someone sends again.
			st.keepaliveAt = time.Time{}
			for i := range st.nStaged {
				p.releaseStaged(&st.staged[i])
				p.d.stats.drops.Add(1)
			}
			st.nStaged = 0
			if st.zeroKeysAt.IsZero() {
				st.zeroKeysAt = now.Add(3 * RejectAfterTime)
			}
		} else {
			st.attempts++
			st.lastSentHandshake = time.Time{}
			init = p.initiateLocked(st, now, true)
		}
	}
	if due(st.keepaliveAt, now) {
		st.keepaliveAt = time.Time{}
		keepalive = true
		if st.needAnotherKeepalive {
			st.needAnotherKeepalive = false
			st.keepaliveAt = now.Add(KeepaliveTimeout)
		}
	}
	if due(st.newHandshakeAt, now) {
		st.newHandshakeAt = time.Time{}
		if init == nil {
			init = p.initiateLocked(st, now, false)
		}
	}
	if due(st.rekeyAt, now) {
		by := st.rekeyBy
		st.rekeyAt, st.rekeyBy = time.Time{}, time.Time{}
		if init == nil && st.begunBy(by) {
			st.lastSentHandshake = time.Time{}
			init = p.initiateLocked(st, now, false)
		}
	}
	if due(st.zeroKeysAt, now) {
		p.dropStateLocked()
		p.mu.Unlock()
		return time.Time{}
	}
	var next time.Time
	for _, t := range [...]time.Time{st.retransmitAt, st.keepaliveAt, st.newHandshakeAt, st.zeroKeysAt, st.rekeyAt} {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	p.mu.Unlock()

	p.sendHandshake(init)
	if keepalive {
		p.send(nil)
	}
	return next
}
