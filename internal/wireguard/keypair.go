package wireguard

import (
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
)

// keypair holds the transport keys of one session.
type keypair struct {
	send, recv  cipher.AEAD
	sendNonce   atomic.Uint64
	created     time.Time
	begun       time.Time // when its handshake began (see handshake.begun)
	initiator   bool
	localIndex  uint32
	remoteIndex uint32

	mu     sync.Mutex // guards replay
	replay replayWindow
}

func newKeypair(send, recv *[32]byte, initiator bool, now time.Time) *keypair {
	kp := &keypair{created: now, initiator: initiator}
	kp.send, _ = chacha20poly1305.New(send[:])
	kp.recv, _ = chacha20poly1305.New(recv[:])
	clear(send[:])
	clear(recv[:])
	return kp
}

// usable reports whether kp may still encrypt at time now.
func (kp *keypair) usable(now time.Time) bool {
	return kp != nil && kp.sendNonce.Load() < RejectAfterMessages && now.Sub(kp.created) < RejectAfterTime
}

// sealTransport encrypts the n-byte packet at b[16:16+n] in place into a
// transport message with the given counter and returns the message. b
// must have room for the padded packet and the tag.
func sealTransport(kp *keypair, counter uint64, b []byte, n int) []byte {
	p := paddedLen(n)
	clear(b[TransportHeaderSize+n : TransportHeaderSize+p])
	putType(b, TypeTransport)
	// The nonce is four zero bytes and the little-endian counter, which
	// is exactly header bytes 4..16 while the receiver field is zero.
	binary.LittleEndian.PutUint32(b[4:], 0)
	binary.LittleEndian.PutUint64(b[8:], counter)
	kp.send.Seal(b[TransportHeaderSize:TransportHeaderSize], b[4:TransportHeaderSize], b[TransportHeaderSize:TransportHeaderSize+p], nil)
	binary.LittleEndian.PutUint32(b[4:], kp.remoteIndex)
	return b[:TransportHeaderSize+p+tagSize]
}

// openTransport decrypts transport message msg in place and returns the
// padded plaintext. It overwrites the receiver field.
func openTransport(kp *keypair, msg []byte) ([]byte, bool) {
	binary.LittleEndian.PutUint32(msg[4:], 0)
	pt, err := kp.recv.Open(msg[TransportHeaderSize:TransportHeaderSize], msg[4:TransportHeaderSize], msg[TransportHeaderSize:], nil)
	return pt, err == nil
}

func randUint32() uint32 {
	var b [4]byte
	rand.Read(b[:])
	return binary.LittleEndian.Uint32(b[:])
}
