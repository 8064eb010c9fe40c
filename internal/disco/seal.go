package disco

import (
	"crypto/rand"
	"sync"

	"github.com/microlink-go/microlink/internal/box"
	"github.com/microlink-go/microlink/internal/key"
)

// SharedKey returns the NaCl box key shared by priv and peer.
func SharedKey(priv key.Private, peer key.DiscoPublic) *[32]byte {
	var k [32]byte
	box.Precompute(&k, (*[32]byte)(&peer), (*[32]byte)(&priv))
	return &k
}

// Seal appends a complete disco packet to dst: magic, myPub, a random nonce
// and the plaintext sealed with shared.
func Seal(dst []byte, shared *[32]byte, myPub key.DiscoPublic, plaintext []byte) []byte {
	var nonce [NonceLen]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		panic("disco: no randomness: " + err.Error())
	}
	return sealWithNonce(dst, shared, myPub, &nonce, plaintext)
}

func sealWithNonce(dst []byte, shared *[32]byte, myPub key.DiscoPublic, nonce *[NonceLen]byte, plaintext []byte) []byte {
	dst = append(dst, Magic...)
	dst = append(dst, myPub[:]...)
	dst = append(dst, nonce[:]...)
	return box.SealShared(dst, plaintext, nonce, shared)
}

// Open authenticates and decrypts the disco packet pkt with shared,
// appending the plaintext to dst. It reports false for anything that is not
// a disco packet sealed with shared.
func Open(dst []byte, shared *[32]byte, pkt []byte) ([]byte, bool) {
	if !LooksLikeDisco(pkt) {
		return nil, false
	}
	nonce := (*[NonceLen]byte)(pkt[MagicLen+KeyLen : HeaderLen])
	return box.OpenShared(dst, pkt[HeaderLen:], nonce, shared)
}

// Sealer seals and opens disco packets for one disco private key. It
// computes the shared key of each peer once and keeps at most a bounded
// number of them. It is safe for concurrent use.
type Sealer struct {
	priv key.Private
	pub  key.DiscoPublic
	max  int

	mu     sync.Mutex
	shared map[key.DiscoPublic]*[32]byte
}

// DefaultMaxPeers bounds a Sealer's cache when NewSealer is given 0.
const DefaultMaxPeers = 1024

// NewSealer returns a Sealer for priv that caches at most maxPeers shared
// keys (DefaultMaxPeers if maxPeers <= 0).
func NewSealer(priv key.Private, maxPeers int) *Sealer {
	if maxPeers <= 0 {
		maxPeers = DefaultMaxPeers
	}
	return &Sealer{priv: priv, pub: priv.DiscoPublic(), max: maxPeers, shared: make(map[key.DiscoPublic]*[32]byte)}
}

// Public returns the disco public key that packets are sealed from.
func (s *Sealer) Public() key.DiscoPublic { return s.pub }

// Shared returns the shared key for peer, computing it on first use. When
// the cache is full an arbitrary entry is dropped; returned keys stay valid.
func (s *Sealer) Shared(peer key.DiscoPublic) *[32]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k, ok := s.shared[peer]; ok {
		return k
	}
	if len(s.shared) >= s.max {
		for old := range s.shared {
			delete(s.shared, old)
			break
		}
	}
	k := SharedKey(s.priv, peer)
	s.shared[peer] = k
	return k
}

// Forget drops the cached shared key of peer.
func (s *Sealer) Forget(peer key.DiscoPublic) {
	s.mu.Lock()
	delete(s.shared, peer)
	s.mu.Unlock()
}

// scratch holds plaintexts while they are sealed.
var scratch = sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }}

// Seal appends a disco packet carrying m, sealed for peer, to dst.
func (s *Sealer) Seal(dst []byte, peer key.DiscoPublic, m Message) []byte {
	bp := scratch.Get().(*[]byte)
	plain := m.AppendMarshal((*bp)[:0])
	dst = Seal(dst, s.Shared(peer), s.pub, plain)
	*bp = plain[:0]
	scratch.Put(bp)
	return dst
}

// Open authenticates pkt as coming from sender and parses its message.
// The caller decides whether sender is a peer it knows before calling Open,
// so unknown senders cost no key computation.
func (s *Sealer) Open(pkt []byte, sender key.DiscoPublic) (Message, bool) {
	var buf [256]byte
	plain, ok := Open(buf[:0], s.Shared(sender), pkt)
	if !ok {
		return nil, false
	}
	m, err := Parse(plain)
	if err != nil {
		return nil, false
	}
	return m, true
}
