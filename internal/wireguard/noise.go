package wireguard

import (
	"errors"
	"time"

	"github.com/microlink-go/microlink/internal/key"
	"golang.org/x/crypto/chacha20poly1305"
)

type handshakeState uint8

const (
	handshakeZeroed handshakeState = iota
	handshakeInitiationCreated
	handshakeInitiationConsumed
	handshakeResponseCreated
	handshakeResponseConsumed
)

// handshake is the Noise IK state of one peer between the first message
// and the derivation of a keypair.
type handshake struct {
	state           handshakeState
	hash            [32]byte
	chainKey        [32]byte
	localEphemeral  key.Private
	remoteEphemeral key.Public
	localIndex      uint32
	remoteIndex     uint32
	// begun is when this side sent the initiation or received it.
	begun time.Time
}

var (
	zeroNonce [chacha20poly1305.NonceSize]byte
	zeroPSK   [32]byte

	errHandshake = errors.New("wireguard: handshake failed")
)

func (hs *handshake) clear() { *hs = handshake{} }

func sealZero(dst []byte, k *[32]byte, plaintext, ad []byte) {
	aead, _ := chacha20poly1305.New(k[:])
	aead.Seal(dst[:0], zeroNonce[:], plaintext, ad)
}

func openZero(dst []byte, k *[32]byte, ciphertext, ad []byte) bool {
	aead, _ := chacha20poly1305.New(k[:])
	_, err := aead.Open(dst[:0], zeroNonce[:], ciphertext, ad)
	return err == nil
}

// createInitiation starts a handshake with the peer whose static key is
// remote. ss is the static-static shared secret, eph the fresh ephemeral
// key and ts the current TAI64N time. The macs are left zero.
func (hs *handshake) createInitiation(localPub, remote key.Public, ss *[32]byte, eph key.Private, ts tai64n, sender uint32) (initiation, error) {
	var m initiation
	var k [32]byte
	defer clear(k[:])
	defer clear(eph[:]) // this copy; hs keeps its own
	hs.hash = initialHash
	hs.chainKey = initialChainKey
	mixHash(&hs.hash, &hs.hash, remote[:])

	hs.localEphemeral = eph
	m.ephemeral = eph.Public()
	mixKey(&hs.chainKey, &hs.chainKey, m.ephemeral[:])
	mixHash(&hs.hash, &hs.hash, m.ephemeral[:])

	es, err := eph.SharedSecret(remote)
	defer clear(es[:])
	if err != nil {
		return m, errHandshake
	}
	kdf2(&hs.chainKey, &k, hs.chainKey[:], es[:])
	sealZero(m.static[:], &k, localPub[:], hs.hash[:])
	mixHash(&hs.hash, &hs.hash, m.static[:])

	kdf2(&hs.chainKey, &k, hs.chainKey[:], ss[:])
	sealZero(m.timestamp[:], &k, ts[:], hs.hash[:])
	mixHash(&hs.hash, &hs.hash, m.timestamp[:])

	m.sender = sender
	hs.localIndex = sender
	hs.state = handshakeInitiationCreated
	return m, nil
}

// openedInitiation is the responder's view of an initiation whose
// encrypted static key was opened; the timestamp is still sealed.
type openedInitiation struct {
	msg      *initiation
	peer     key.Public
	hash     [32]byte
	chainKey [32]byte
}

// openInitiation decrypts the initiator's static key from m.
func openInitiation(local key.Private, localPub key.Public, m *initiation) (o openedInitiation, ok bool) {
	var k [32]byte
	defer clear(k[:])
	defer clear(local[:])
	o.msg = m
	mixHash(&o.hash, &initialHash, localPub[:])
	mixHash(&o.hash, &o.hash, m.ephemeral[:])
	mixKey(&o.chainKey, &initialChainKey, m.ephemeral[:])
	es, err := local.SharedSecret(key.Public(m.ephemeral))
	defer clear(es[:])
	if err != nil {
		return o, false
	}
	kdf2(&o.chainKey, &k, o.chainKey[:], es[:])
	if !openZero(o.peer[:], &k, m.static[:], o.hash[:]) {
		return o, false
	}
	mixHash(&o.hash, &o.hash, m.static[:])
	return o, true
}

// openTimestamp authenticates the initiator with the static-static secret
// ss and returns the initiation's timestamp.
func (o *openedInitiation) openTimestamp(ss *[32]byte) (ts tai64n, ok bool) {
	var k [32]byte
	defer clear(k[:])
	kdf2(&o.chainKey, &k, o.chainKey[:], ss[:])
	if !openZero(ts[:], &k, o.msg.timestamp[:], o.hash[:]) {
		return ts, false
	}
	mixHash(&o.hash, &o.hash, o.msg.timestamp[:])
	return ts, true
}

// clear wipes the chaining key and hash of o.
func (o *openedInitiation) clear() {
	clear(o.chainKey[:])
	clear(o.hash[:])
}

// consumeInitiation adopts an authenticated initiation as the peer's
// handshake state.
func (hs *handshake) consumeInitiation(o *openedInitiation) {
	hs.hash = o.hash
	hs.chainKey = o.chainKey
	hs.remoteIndex = o.msg.sender
	hs.remoteEphemeral = key.Public(o.msg.ephemeral)
	hs.state = handshakeInitiationConsumed
}

// createResponse answers a consumed initiation from the peer with static
// key remote. The macs are left zero.
func (hs *handshake) createResponse(remote key.Public, eph key.Private, sender uint32) (response, error) {
	var m response
	if hs.state != handshakeInitiationConsumed {
		return m, errHandshake
	}
	m.sender = sender
	m.receiver = hs.remoteIndex
	hs.localIndex = sender
	hs.localEphemeral = eph
	m.ephemeral = eph.Public()
	mixHash(&hs.hash, &hs.hash, m.ephemeral[:])
	mixKey(&hs.chainKey, &hs.chainKey, m.ephemeral[:])

	var ee, se, tau, k [32]byte
	defer func() {
		clear(ee[:])
		clear(se[:])
		clear(tau[:])
		clear(k[:])
		clear(eph[:])
	}()
	var err error
	if ee, err = eph.SharedSecret(hs.remoteEphemeral); err != nil {
		return m, errHandshake
	}
	mixKey(&hs.chainKey, &hs.chainKey, ee[:])
	if se, err = eph.SharedSecret(remote); err != nil {
		return m, errHandshake
	}
	mixKey(&hs.chainKey, &hs.chainKey, se[:])

	kdf3(&hs.chainKey, &tau, &k, hs.chainKey[:], zeroPSK[:])
	mixHash(&hs.hash, &hs.hash, tau[:])
	sealZero(m.empty[:], &k, nil, hs.hash[:])
	mixHash(&hs.hash, &hs.hash, m.empty[:])
	hs.state = handshakeResponseCreated
	return m, nil
}

// consumeResponse completes the initiator's side with the responder's
// message. It leaves hs unchanged if m does not authenticate.
func (hs *handshake) consumeResponse(local key.Private, m *response) bool {
	if hs.state != handshakeInitiationCreated {
		return false
	}
	var hash, ck, tau, k, ee, se [32]byte
	defer func() {
		clear(hash[:])
		clear(ck[:])
		clear(tau[:])
		clear(k[:])
		clear(ee[:])
		clear(se[:])
		clear(local[:])
	}()
	mixHash(&hash, &hs.hash, m.ephemeral[:])
	mixKey(&ck, &hs.chainKey, m.ephemeral[:])
	var err error
	if ee, err = hs.localEphemeral.SharedSecret(key.Public(m.ephemeral)); err != nil {
		return false
	}
	mixKey(&ck, &ck, ee[:])
	if se, err = local.SharedSecret(key.Public(m.ephemeral)); err != nil {
		return false
	}
	mixKey(&ck, &ck, se[:])
	kdf3(&ck, &tau, &k, ck[:], zeroPSK[:])
	mixHash(&hash, &hash, tau[:])
	if !openZero(nil, &k, m.empty[:], hash[:]) {
		return false
	}
	mixHash(&hash, &hash, m.empty[:])
	hs.hash = hash
	hs.chainKey = ck
	hs.remoteIndex = m.sender
	hs.state = handshakeResponseConsumed
	return true
}

// deriveKeys returns the transport keys of a finished handshake and
// whether the local side was the initiator, then zeroes the handshake
// secrets (the indices are kept).
func (hs *handshake) deriveKeys() (send, recv [32]byte, initiator bool, err error) {
	switch hs.state {
	case handshakeResponseConsumed:
		kdf2(&send, &recv, hs.chainKey[:], nil)
		initiator = true
	case handshakeResponseCreated:
		kdf2(&recv, &send, hs.chainKey[:], nil)
	default:
		return send, recv, false, errHandshake
	}
	clear(hs.chainKey[:])
	clear(hs.hash[:])
	clear(hs.localEphemeral[:])
	hs.remoteEphemeral = key.Public{}
	hs.state = handshakeZeroed
	return send, recv, initiator, nil
}
