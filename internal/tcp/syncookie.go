package tcp

import (
	"encoding/binary"
	"hash/maphash"
	"time"
)

// SYN cookies: once MaxHalfOpen connections wait for their handshake, a
// SYN gets a SYN-ACK whose sequence number encodes what the connection
// needs (the peer's MSS, window scale and SACK permission) and a keyed
// hash of the four-tuple, and nothing is kept. A peer that completes the
// handshake returns the cookie in its ACK, and only then the connection
// is made. A SYN flood thus costs a SYN-ACK per SYN and no memory, and a
// peer that connects meanwhile still gets in.
//
// Only tailnet peers reach the stack, each through WireGuard with its
// own source addresses, so a forged cookie could only open a connection
// its sender could open anyway: the hash (19 bits) guards against
// accidents, not against a blind attacker.
//
// The cookie's bits, high to low: 5 of a counter of 64-second periods, 3
// of MSS index, 4 of window scale (0: none; else the scale plus one), 1 of
// SACK permitted, 19 of hash.

// cookieMSS are the MSS values a cookie can carry; the peer's is rounded
// down to one of them.
var cookieMSS = [8]uint16{536, 1024, 1200, 1220, 1240, 1360, 1440, 1460}

const cookiePeriod = 64 * time.Second

// cookie returns the initial sequence number encoding a SYN from the
// peer of id with sequence number seq and the given options, in period p.
func (s *Stack) cookie(id connID, seq uint32, p uint32, opts uint32) uint32 {
	top := p&31<<27 | opts<<19
	return top | s.cookieHash(id, seq, top)&(1<<19-1)
}

func (s *Stack) cookieHash(id connID, seq, top uint32) uint32 {
	var b [44]byte
	l, r := id.local.Addr().As16(), id.remote.Addr().As16()
	copy(b[0:16], l[:])
	copy(b[16:32], r[:])
	binary.BigEndian.PutUint16(b[32:], id.local.Port())
	binary.BigEndian.PutUint16(b[34:], id.remote.Port())
	binary.BigEndian.PutUint32(b[36:], seq)
	binary.BigEndian.PutUint32(b[40:], top)
	return uint32(maphash.Bytes(s.seed, b[:]))
}

func (s *Stack) cookieNow() uint32 { return uint32(time.Since(s.epoch)/cookiePeriod) + 1 }

// sendCookie answers the SYN sg with a SYN-ACK carrying a cookie.
func (s *Stack) sendCookie(id connID, sg *segment) {
	mi := 0
	for i, m := range cookieMSS {
		if sg.mss == 0 && m == 536 || sg.mss != 0 && m <= sg.mss {
			mi = i
		}
	}
	opts := uint32(mi) << 5
	h := header{src: id.local, dst: id.remote, ack: sg.seq + 1, flags: flagSYN | flagACK,
		mss: uint16(s.mss(id.local.Addr())), wscale: -1, wnd: uint16(min(s.initialBuffer(s.cfg.ReceiveBuffer), 0xffff))}
	if sg.wscale >= 0 {
		opts |= uint32(sg.wscale+1) << 1
		h.wscale = int8(s.shift)
	}
	if sg.sackOK {
		opts |= 1
		h.sackOK = true
	}
	h.seq = s.cookie(id, sg.seq, s.cookieNow(), opts)
	s.cookies.Add(1)
	s.sendNow(&h)
}

// cookieACK checks whether the ACK sg completes a handshake begun with a
// cookie and, if it does and there is room, makes the connection and
// hands it sg. It reports whether sg was taken.
func (s *Stack) cookieACK(l *Listener, id connID, sg *segment) bool {
	iss, peer := sg.ack-1, sg.seq-1
	p := iss >> 27
	now := s.cookieNow()
	if p != now&31 && p != (now-1)&31 {
		return false
	}
	top := iss &^ (1<<19 - 1)
	if s.cookieHash(id, peer, top)&(1<<19-1) != iss&(1<<19-1) {
		return false
	}
	opts := iss >> 19 & 0xff
	s.mu.Lock()
	if c := s.conns[id]; c != nil {
		s.mu.Unlock()
		c.input(sg)
		return true
	}
	if s.closed || l.closed || l.full() || s.inbound >= s.inboundLimit() || len(s.conns) >= s.cfg.MaxConns {
		s.mu.Unlock()
		s.dropped.Add(1)
		return true
	}
	c := s.newConn(id)
	c.iss = iss
	c.listener = l
	c.inbound = true
	s.inbound++
	s.conns[id] = c
	s.mu.Unlock()

	c.mu.Lock()
	syn := segment{seq: peer, flags: flagSYN, wnd: sg.wnd, wscale: -1, mss: cookieMSS[opts>>5&7], sackOK: opts&1 != 0}
	if ws := opts >> 1 & 0xf; ws != 0 {
		syn.wscale = int8(ws - 1)
	}
	c.sndUna, c.sndNxt, c.bufSeq = iss, iss+1, iss+1
	c.backoff = 1 // the SYN-ACK's send time is not known: no RTT sample
	c.state = stateSynReceived
	c.irs, c.rcvNxt = peer, peer+1
	c.offerWScale = syn.wscale >= 0
	c.synOptions(&syn)
	c.advEdge = c.rcvNxt + uint32(min(c.rcvLimit, 0xffff))
	c.mu.Unlock()
	c.input(sg)
	return true
}
