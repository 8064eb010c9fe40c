package wireguard

import (
	"time"

	"github.com/microlink-go/microlink/internal/key"
)

// A restart loses a node's session keys, and nothing in WireGuard tells
// its peers: they would go on sending into a session the node no longer
// has until RejectAfterTime, or until KeepaliveTimeout+RekeyTimeout of
// silence starts a new handshake. Tailscale nodes learn of a peer's
// restart from control instead (its disco key is new at every start), and
// the data plane hands that news to the device with the methods below.

// PeerRestarted tells the device that the peer restarted and has lost
// its session keys. Packets for it no longer go into the current session
// but wait for a new handshake, which the next packet starts at once,
// even within RekeyTimeout of the last one. The current keypair still
// opens what arrives: the peer's new instance may already have made that
// session with this device before the news came.
func (d *Device) PeerRestarted(k key.NodePublic) {
	p := d.lookupPeer(k)
	if p == nil {
		return
	}
	p.mu.Lock()
	st := p.st
	if st == nil || p.removed {
		p.mu.Unlock()
		return
	}
	if cur := st.current; cur != nil {
		d.mu.Lock()
		if old := st.previous; old != nil && d.index[old.localIndex].kp == old {
			delete(d.index, old.localIndex)
		}
		d.mu.Unlock()
		st.previous, st.current = cur, nil
	}
	st.lastSentHandshake = time.Time{}
	var init []byte
	if st.nStaged > 0 {
		init = p.initiateLocked(st, d.now(), false)
	}
	p.mu.Unlock()
	p.sendHandshake(init)
}

// Rekey makes sure that the session with the peer, or the handshake in
// progress, began after this call: one that began before it is replaced
// by a new handshake, started even within RekeyTimeout of the last one,
// rekeyWait later. The current session carries packets until the new one
// is confirmed. It is for a peer that may have dropped the session
// without a word: a peer that made it with this device before it learned
// from control that this node had restarted, and reset it then, as
// tailscaled does. The data plane calls it when the peer first shows that
// it knows this node's new disco key, which comes with that news.
func (d *Device) Rekey(k key.NodePublic) {
	p := d.lookupPeer(k)
	if p == nil {
		return
	}
	now := d.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.st
	if st == nil || p.removed || !st.begunBy(now) {
		return
	}
	st.rekeyBy = now
	st.rekeyAt = now.Add(rekeyWait)
	d.kickAt(st.rekeyAt)
}

// rekeyWait is how long Rekey waits before it checks the session: long
// enough for the peer to have finished resetting the session (it does so
// right after it learns our new disco key, which its disco message showed)
// and for a new initiation to be past wireguard-go's 50 ms limit between
// initiations and the 16 ms grain of handshake timestamps, which would
// otherwise have it ignored by a peer that kept the session.
const rekeyWait = 250 * time.Millisecond

// begunBy reports whether the current session, or the handshake of ours
// in progress, began at or before t.
func (st *session) begunBy(t time.Time) bool {
	if st.hs.state == handshakeInitiationCreated {
		return !st.hs.begun.After(t)
	}
	return st.current != nil && !st.current.begun.After(t)
}

func (d *Device) lookupPeer(k key.NodePublic) *peer {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return nil
	}
	return d.peers[k]
}
