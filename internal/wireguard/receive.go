package wireguard

import (
	"time"

	"github.com/microlink-go/microlink/internal/key"
)

// Receive handles one WireGuard message of any type from the network.
// It answers handshakes through Config.Send and hands decrypted packets
// whose inner source address the peer may use to Config.Deliver. It
// returns the peer the message authenticated as, if any, so the transport
// can learn where that peer is. Receive may modify msg.
func (d *Device) Receive(msg []byte) (from key.NodePublic, ok bool) {
	return d.ReceiveFrom(msg, nil)
}

// ReceiveFrom is Receive with the message's source: any bytes that
// identify the sender's address to the transport (for UDP, the
// address and port; at most 64 bytes). When the device is under load,
// handshake messages must carry a mac2 made with a cookie bound to src,
// and refused ones are answered through Config.SendCookieReply with the
// same src.
//
// Handshake messages are only checked (size and mac1) and queued: the
// device's handshake goroutine handles them, and ReceiveFrom returns
// false for them. Transport messages are handled at once and never wait
// behind handshakes.
func (d *Device) ReceiveFrom(msg, src []byte) (from key.NodePublic, ok bool) {
	var now time.Time
	return d.receive(msg, src, &now)
}

// receive is ReceiveFrom with a reading of the clock that transport
// messages share: *clock, read into it by the first that needs it if zero.
func (d *Device) receive(msg, src []byte, clock *time.Time) (from key.NodePublic, ok bool) {
	var p *peer
	switch messageType(msg) {
	case TypeTransport:
		p = d.receiveTransport(msg, clock)
	case TypeInitiation, TypeResponse:
		select {
		case <-d.done:
			d.stats.drops.Add(1)
		default:
			d.queueHandshake(msg, src)
		}
		return key.NodePublic{}, false
	case TypeCookieReply:
		p = d.receiveCookieReply(msg)
	}
	if p == nil {
		d.stats.drops.Add(1)
		return key.NodePublic{}, false
	}
	return p.key, true
}

// receiveTransport handles a transport message at time *clock, which it
// reads from the device's clock if zero.
func (d *Device) receiveTransport(msg []byte, clock *time.Time) *peer {
	h, err := parseTransportHeader(msg)
	if err != nil {
		return nil
	}
	e := d.lookupIndex(h.receiver)
	kp, p := e.kp, e.p
	if kp == nil {
		return nil
	}
	if clock.IsZero() {
		*clock = d.now()
	}
	now := *clock
	if now.Sub(kp.created) >= RejectAfterTime {
		return nil
	}
	n := len(msg)
	pt, ok := openTransport(kp, msg)
	if !ok {
		return nil
	}
	kp.mu.Lock()
	ok = kp.replay.accept(h.counter)
	kp.mu.Unlock()
	if !ok {
		d.stats.replays.Add(1)
		return nil
	}

	p.mu.Lock()
	st := p.st
	if st == nil || p.removed {
		p.mu.Unlock()
		return nil
	}
	var flush batch
	if st.next == kp {
		// The initiator's first message confirms the responder's keypair.
		d.mu.Lock()
		if old := st.previous; old != nil && d.index[old.localIndex].kp == old {
			delete(d.index, old.localIndex)
		}
		d.mu.Unlock()
		st.previous = st.current
		st.current = kp
		st.next = nil
		p.handshakeCompleteLocked(st, now)
		// A session is confirmed: an initiation of ours still in flight
		// (see receiveInitiation) is moot, and its retries have ended.
		if st.hs.state == handshakeInitiationCreated {
			d.dropIndex(st.hs.localIndex, p, nil)
			st.hs.clear()
		}
		flush = p.takeStaged(st, kp, false, now)
	}
	var init []byte
	if cur := st.current; !st.sentLastMinuteHandshake && cur != nil && cur.initiator &&
		now.Sub(cur.created) > RejectAfterTime-KeepaliveTimeout-RekeyTimeout {
		st.sentLastMinuteHandshake = true
		init = p.initiateLocked(st, now, false)
	}
	st.newHandshakeAt = time.Time{}
	if len(pt) > 0 {
		if st.keepaliveAt.IsZero() {
			st.keepaliveAt = now.Add(KeepaliveTimeout)
			d.kickAt(st.keepaliveAt)
		} else {
			st.needAnotherKeepalive = true
		}
	}
	p.mu.Unlock()

	p.rxBytes.Add(uint64(n))
	p.rxPackets.Add(1)
	d.stats.pktsIn.Add(1)
	d.stats.bytesIn.Add(uint64(n))
	p.sendBatch(&flush)
	p.sendHandshake(init)

	if len(pt) == 0 {
		return p // keepalive
	}
	src, _, length, ok := packetAddrs(pt)
	if !ok {
		d.stats.drops.Add(1)
		return p
	}
	d.mu.RLock()
	owner := d.routes.lookup(src)
	d.mu.RUnlock()
	if owner != p {
		d.stats.drops.Add(1)
		return p
	}
	d.deliver(p.key, pt[:length])
	return p
}

// receiveInitiation answers an initiation that admit let through. It
// runs on the handshake goroutine.
func (d *Device) receiveInitiation(msg, src []byte, now time.Time) *peer {
	m, err := parseInitiation(msg)
	if err != nil {
		return nil
	}
	o, ok := openInitiation(d.static, d.staticPub, &m)
	defer o.clear()
	if !ok {
		return nil
	}
	d.mu.RLock()
	p := d.peers[key.NodePublic(o.peer)]
	d.mu.RUnlock()
	if p == nil {
		d.log.Debug("wireguard: initiation from unknown peer", "peer", key.NodePublic(o.peer).ShortString())
		return nil
	}

	p.mu.Lock()
	if p.removed {
		p.mu.Unlock()
		return nil
	}
	st := p.state()
	if !st.ssOK {
		p.mu.Unlock()
		return nil
	}
	ts, ok := o.openTimestamp(&st.ss)
	if !ok {
		p.mu.Unlock()
		return nil
	}
	if !ts.after(p.lastTimestamp) {
		p.mu.Unlock()
		d.log.Debug("wireguard: replayed initiation", "peer", p.key.ShortString())
		return nil
	}
	if !p.lastInitConsumed.IsZero() && now.Sub(p.lastInitConsumed) <= HandshakeInitationRate {
		p.mu.Unlock()
		d.log.Debug("wireguard: initiation flood", "peer", p.key.ShortString())
		return nil
	}
	p.lastTimestamp = ts
	p.lastInitConsumed = now
	// The responder's state lives only until the keypair is derived, in
	// hs of its own: st.hs keeps our own initiation, if one is in flight.
	// When both sides initiate at once (both had packets waiting, as
	// after a restart), each answers the other; a peer that then drops
	// its own initiation (wireguard-go does) ignores our response, but
	// its response to our initiation still completes the handshake here,
	// one round trip later, instead of both waiting RekeyTimeout to try
	// again.
	var hs handshake
	defer hs.clear()
	hs.consumeInitiation(&o)
	hs.begun = now
	st.newHandshakeAt = time.Time{}

	idx, ok := d.newIndex(p, 0)
	if !ok {
		p.mu.Unlock()
		return nil
	}
	r, err := hs.createResponse(key.Public(p.key), key.NewPrivate(), idx)
	if err != nil {
		d.dropIndex(idx, p, nil)
		p.mu.Unlock()
		return nil
	}
	var out [ResponseSize]byte
	r.marshal(&out)
	st.cookies.addMACs(out[:], now)
	st.lastSentHandshake = now
	if _, ok := p.beginSessionLocked(st, &hs, now); !ok {
		d.dropIndex(idx, p, nil)
		p.mu.Unlock()
		return nil
	}
	st.keepaliveAt = time.Time{}
	p.mu.Unlock()

	p.rxBytes.Add(uint64(len(msg)))
	p.sendHandshake(out[:])
	return p
}

// receiveResponse completes our handshake with a response that admit let
// through. It runs on the handshake goroutine.
func (d *Device) receiveResponse(msg, src []byte, now time.Time) *peer {
	m, err := parseResponse(msg)
	if err != nil {
		return nil
	}
	e := d.lookupIndex(m.receiver)
	p := e.p
	if p == nil || e.kp != nil {
		return nil
	}
	p.mu.Lock()
	st := p.st
	if st == nil || p.removed || st.hs.localIndex != m.receiver || !st.hs.consumeResponse(d.static, &m) {
		p.mu.Unlock()
		return nil
	}
	st.newHandshakeAt = time.Time{}
	kp, ok := p.beginSessionLocked(st, &st.hs, now)
	if !ok {
		p.mu.Unlock()
		return nil
	}
	p.handshakeCompleteLocked(st, now)
	flush := p.takeStaged(st, kp, true, now)
	p.mu.Unlock()

	p.rxBytes.Add(uint64(len(msg)))
	p.sendBatch(&flush)
	return p
}

func (d *Device) receiveCookieReply(msg []byte) *peer {
	r, err := parseCookieReply(msg)
	if err != nil {
		return nil
	}
	p := d.lookupIndex(r.receiver).p
	if p == nil {
		return nil
	}
	now := d.now()
	p.mu.Lock()
	ok := p.st != nil && p.st.cookies.consumeReply(&r, now)
	p.mu.Unlock()
	if !ok {
		return nil
	}
	return p
}
