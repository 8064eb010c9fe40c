package wireguard

import (
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/microlink-go/microlink/internal/key"
)

// peer is a configured peer. Until it is used it holds only its key,
// prefixes and counters; its protocol state lives in st.
type peer struct {
	d       *Device
	key     key.NodePublic
	allowed []netip.Prefix // guarded by d.mu

	rxBytes, txBytes     atomic.Uint64
	rxPackets, txPackets atomic.Uint64
	lastHandshake        atomic.Int64 // UnixNano

	mu      sync.Mutex // guards the fields below
	removed bool
	st      *session
	// The newest initiation timestamp and when it was accepted outlive
	// st, so that an old initiation cannot be replayed after the session
	// state was released.
	lastTimestamp    tai64n
	lastInitConsumed time.Time
}

// session is the protocol state of a peer in use.
type session struct {
	ss   [32]byte // static-static shared secret
	ssOK bool

	hs                handshake
	cookies           cookieGenerator
	lastSentHandshake time.Time

	current, previous, next *keypair

	staged  [maxStaged]stagedPacket
	nStaged int

	// Timer deadlines; zero means not pending.
	retransmitAt   time.Time
	keepaliveAt    time.Time
	newHandshakeAt time.Time
	zeroKeysAt     time.Time

	attempts                int
	needAnotherKeepalive    bool
	sentLastMinuteHandshake bool

	// rekeyAt is when to look for a session or handshake that began by
	// rekeyBy, and replace it (see Device.Rekey).
	rekeyAt, rekeyBy time.Time
}

// stagedPacket is a plaintext packet waiting for a session, stored at
// offset TransportHeaderSize of its buffer.
type stagedPacket struct {
	pb  *buffer
	big []byte
	n   int
}

func (sp *stagedPacket) bytes() []byte {
	if sp.pb != nil {
		return sp.pb.b[:]
	}
	return sp.big
}

// outgoing is a staged packet with its counter, ready to be sealed once
// the peer lock is released.
type outgoing struct {
	stagedPacket
	counter uint64
}

type batch struct {
	kp   *keypair
	pkts [maxStaged]outgoing
	n    int
}

// state returns p's session, creating it. p.mu must be held.
func (p *peer) state() *session {
	if p.st == nil {
		st := &session{}
		st.cookies.keys = newMACKeys(key.Public(p.key))
		ss, err := p.d.static.SharedSecret(key.Public(p.key))
		st.ss, st.ssOK = ss, err == nil
		p.st = st
	}
	return p.st
}

// dropStateLocked forgets all keys and queued packets of p, wiping the
// secrets it holds itself. (The keypairs' AEADs keep their keys until
// they are garbage: the cipher package offers no way to wipe them.)
func (p *peer) dropStateLocked() {
	st := p.st
	if st == nil {
		return
	}
	d := p.d
	d.dropIndex(st.hs.localIndex, p, nil)
	for _, kp := range []*keypair{st.current, st.previous, st.next} {
		if kp != nil {
			d.dropIndex(kp.localIndex, p, kp)
		}
	}
	st.hs.clear()
	clear(st.ss[:])
	st.ssOK = false
	for i := range st.nStaged {
		p.releaseStaged(&st.staged[i])
	}
	p.st = nil
}

func (p *peer) releaseStaged(sp *stagedPacket) {
	if sp.pb != nil {
		p.d.pool.put(sp.pb)
	}
	*sp = stagedPacket{}
}

// newMessageBuffer returns a buffer able to hold the transport message of
// an n-byte packet.
func (p *peer) newMessageBuffer(n int) stagedPacket {
	if TransportHeaderSize+paddedLen(n)+tagSize <= bufferSize {
		return stagedPacket{pb: p.d.pool.get(), n: n}
	}
	return stagedPacket{big: make([]byte, TransportHeaderSize+paddedLen(n)+tagSize), n: n}
}

// stage queues pkt until a session exists, dropping the oldest packet when
// the queue is full.
func (p *peer) stage(st *session, pkt []byte) {
	if st.nStaged == maxStaged {
		p.releaseStaged(&st.staged[0])
		copy(st.staged[:], st.staged[1:])
		st.nStaged--
		st.staged[st.nStaged] = stagedPacket{}
		p.d.stats.drops.Add(1)
	}
	sp := p.newMessageBuffer(len(pkt))
	copy(sp.bytes()[TransportHeaderSize:], pkt)
	st.staged[st.nStaged] = sp
	st.nStaged++
}

// takeStaged moves the staged packets into a batch for kp, reserving
// their counters. If keepalive is set and nothing is staged, the batch
// holds one keepalive.
func (p *peer) takeStaged(st *session, kp *keypair, keepalive bool, now time.Time) batch {
	b := batch{kp: kp}
	if st.nStaged == 0 && keepalive {
		st.staged[0] = p.newMessageBuffer(0)
		st.nStaged = 1
	}
	for i := range st.nStaged {
		b.pkts[i] = outgoing{stagedPacket: st.staged[i], counter: kp.sendNonce.Add(1) - 1}
		st.staged[i] = stagedPacket{}
		if b.pkts[i].n > 0 {
			p.dataSentLocked(st, now)
		}
	}
	b.n = st.nStaged
	st.nStaged = 0
	if b.n > 0 {
		st.keepaliveAt = time.Time{}
	}
	return b
}

// sendBatch seals and sends the packets of b. p.mu must not be held.
func (p *peer) sendBatch(b *batch) {
	for i := range b.n {
		o := &b.pkts[i]
		p.sealAndSend(b.kp, o.counter, o.bytes(), o.n)
		p.releaseStaged(&o.stagedPacket)
	}
}

// sealAndSend encrypts the n-byte packet at buf[16:] and sends it.
func (p *peer) sealAndSend(kp *keypair, counter uint64, buf []byte, n int) error {
	msg := sealTransport(kp, counter, buf, n)
	err := p.d.send(p.key, msg)
	if err != nil {
		p.d.stats.drops.Add(1)
		return err
	}
	p.txBytes.Add(uint64(len(msg)))
	p.txPackets.Add(1)
	p.d.stats.pktsOut.Add(1)
	p.d.stats.bytesOut.Add(uint64(len(msg)))
	return nil
}

// send encrypts and sends pkt, or queues it and starts a handshake when
// there is no usable session. An empty pkt is a keepalive.
func (p *peer) send(pkt []byte) error {
	if len(pkt) > maxPacketSize {
		p.d.stats.drops.Add(1)
		return ErrPacketTooLarge
	}
	now := p.d.now()
	p.mu.Lock()
	if p.removed {
		p.mu.Unlock()
		return ErrUnknownPeer
	}
	st := p.state()
	kp := st.current
	if !kp.usable(now) {
		p.stage(st, pkt)
		init := p.initiateLocked(st, now, false)
		p.mu.Unlock()
		p.sendHandshake(init)
		return nil
	}
	counter := kp.sendNonce.Add(1) - 1
	var init []byte
	if counter > RekeyAfterMessages || (kp.initiator && now.Sub(kp.created) > RekeyAfterTime) {
		init = p.initiateLocked(st, now, false)
	}
	if len(pkt) > 0 {
		p.dataSentLocked(st, now)
	}
	st.keepaliveAt = time.Time{}
	p.mu.Unlock()

	sp := p.newMessageBuffer(len(pkt))
	buf := sp.bytes()
	copy(buf[TransportHeaderSize:], pkt)
	err := p.sealAndSend(kp, counter, buf, len(pkt))
	p.releaseStaged(&sp)
	p.sendHandshake(init)
	return err
}

// dataSentLocked arms the timer that starts a new handshake when sent
// data gets no answer.
func (p *peer) dataSentLocked(st *session, now time.Time) {
	if st.newHandshakeAt.IsZero() {
		st.newHandshakeAt = now.Add(KeepaliveTimeout + RekeyTimeout + jitter())
		p.d.kickAt(st.newHandshakeAt)
	}
}

func jitter() time.Duration { return rand.N(RekeyTimeoutJitterMax) }

// initiateLocked builds a handshake initiation unless one was sent less
// than RekeyTimeout ago. It returns nil if nothing is to be sent.
func (p *peer) initiateLocked(st *session, now time.Time, retry bool) []byte {
	if !retry {
		st.attempts = 0
	}
	if !st.lastSentHandshake.IsZero() && now.Sub(st.lastSentHandshake) < RekeyTimeout {
		return nil
	}
	if !st.ssOK {
		return nil
	}
	d := p.d
	idx, ok := d.newIndex(p, st.hs.localIndex)
	if !ok {
		return nil
	}
	st.lastSentHandshake = now
	m, err := st.hs.createInitiation(d.staticPub, key.Public(p.key), &st.ss, key.NewPrivate(), stampTAI64N(now), idx)
	if err != nil {
		d.dropIndex(idx, p, nil)
		st.hs.clear()
		return nil
	}
	st.hs.begun = now
	msg := new([InitiationSize]byte)
	m.marshal(msg)
	st.cookies.addMACs(msg[:], now)
	st.keepaliveAt = time.Time{}
	st.retransmitAt = now.Add(RekeyTimeout + jitter())
	d.kickAt(st.retransmitAt)
	return msg[:]
}

// sendHandshake sends a handshake message built under the lock.
func (p *peer) sendHandshake(msg []byte) {
	if msg == nil {
		return
	}
	d := p.d
	if len(msg) == InitiationSize {
		d.stats.initiations.Add(1)
	}
	if err := d.send(p.key, msg); err != nil {
		d.stats.drops.Add(1)
		d.log.Debug("wireguard: sending handshake", "peer", p.key.ShortString(), "err", err)
		if len(msg) == InitiationSize {
			p.initiationNotSent()
		}
		return
	}
	p.txBytes.Add(uint64(len(msg)))
}

// initiationNotSent handles an initiation the transport could not send,
// typically because it has no path to the peer yet. Nothing reached the
// wire, so waiting RekeyTimeout for an answer would only delay the session:
// the next packet for the peer starts a new handshake at once, and without
// one the initiation is retried after unsentRetry. Retries still count
// toward the attempt limit.
func (p *peer) initiationNotSent() {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.st
	if st == nil || p.removed {
		return
	}
	st.lastSentHandshake = time.Time{}
	st.retransmitAt = p.d.now().Add(unsentRetry)
	p.d.kickAt(st.retransmitAt)
}

// beginSessionLocked turns the finished handshake hs (st.hs for our own
// initiation, or the responder's state) into a keypair and rotates the
// keypairs: an initiator uses it at once, a responder keeps it as next
// until the initiator's first message confirms it.
func (p *peer) beginSessionLocked(st *session, hs *handshake, now time.Time) (*keypair, bool) {
	d := p.d
	localIndex, remoteIndex := hs.localIndex, hs.remoteIndex
	send, recv, initiator, err := hs.deriveKeys()
	if err != nil {
		return nil, false
	}
	kp := newKeypair(&send, &recv, initiator, now)
	kp.localIndex, kp.remoteIndex = localIndex, remoteIndex
	kp.begun = hs.begun
	hs.localIndex = 0

	d.mu.Lock()
	if d.closed || d.peers[p.key] != p {
		d.mu.Unlock()
		return nil, false
	}
	d.index[localIndex] = indexEntry{p: p, kp: kp}
	drop := func(old *keypair) {
		if old != nil {
			if e := d.index[old.localIndex]; e.kp == old {
				delete(d.index, old.localIndex)
			}
		}
	}
	if initiator {
		if st.next != nil {
			drop(st.current)
			drop(st.previous)
			st.previous = st.next
			st.next = nil
		} else {
			drop(st.previous)
			st.previous = st.current
		}
		st.current = kp
	} else {
		drop(st.next)
		drop(st.previous)
		st.previous = nil
		st.next = kp
	}
	d.mu.Unlock()
	d.stats.handshakes.Add(1)
	st.zeroKeysAt = now.Add(3 * RejectAfterTime)
	d.kickAt(st.zeroKeysAt)
	return kp, true
}

// handshakeCompleteLocked records a confirmed session.
func (p *peer) handshakeCompleteLocked(st *session, now time.Time) {
	st.retransmitAt = time.Time{}
	st.attempts = 0
	st.sentLastMinuteHandshake = false
	p.lastHandshake.Store(now.UnixNano())
}
