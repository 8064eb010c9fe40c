package wireguard

import (
	"crypto/hmac"
	"crypto/rand"
	"hash"
	"sync"
	"time"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/microlink-go/microlink/internal/blake2s"
	"github.com/microlink-go/microlink/internal/key"
)

// macKeys are the keys derived from a static public key for mac1 and for
// encrypting cookies.
type macKeys struct {
	mac1   [32]byte
	cookie [32]byte
}

func newMACKeys(pub key.Public) macKeys {
	var k macKeys
	h := newBlake2s()
	h.Write([]byte(LabelMAC1))
	h.Write(pub[:])
	h.Sum(k.mac1[:0])
	h.Reset()
	h.Write([]byte(LabelCookie))
	h.Write(pub[:])
	h.Sum(k.cookie[:0])
	return k
}

// mac computes the 16-byte keyed BLAKE2s of data.
func mac(out *[macSize]byte, k []byte, data []byte) {
	h, _ := blake2s.New128(k)
	h.Write(data)
	h.Sum(out[:0])
}

// macOffsets returns where mac1 and mac2 start in a handshake message.
func macOffsets(msg []byte) (mac1, mac2 int) {
	mac2 = len(msg) - macSize
	return mac2 - macSize, mac2
}

// cookieChecker verifies the macs of handshake messages sent to the local
// static key and issues cookies. checkMAC1 is safe for concurrent use;
// callers serialize the other methods.
type cookieChecker struct {
	keys      macKeys
	secret    [32]byte
	secretSet time.Time

	mac1Hashers sync.Pool // of *macHasher keyed with keys.mac1
}

// macHasher is a keyed BLAKE2s-128 and room for its output, reused so
// that checking mac1 allocates nothing.
type macHasher struct {
	h   hash.Hash
	out [macSize]byte
}

func (c *cookieChecker) checkMAC1(msg []byte) bool {
	m, _ := c.mac1Hashers.Get().(*macHasher)
	if m == nil {
		h, _ := blake2s.New128(c.keys.mac1[:])
		m = &macHasher{h: h}
	}
	o1, o2 := macOffsets(msg)
	m.h.Reset()
	m.h.Write(msg[:o1])
	m.h.Sum(m.out[:0])
	ok := hmac.Equal(m.out[:], msg[o1:o2])
	c.mac1Hashers.Put(m)
	return ok
}

func (c *cookieChecker) cookieFor(out *[macSize]byte, src []byte) {
	mac(out, c.secret[:], src)
}

func (c *cookieChecker) checkMAC2(msg, src []byte, now time.Time) bool {
	if c.secretSet.IsZero() || now.Sub(c.secretSet) > CookieRefreshTime {
		return false
	}
	var cookie, m [macSize]byte
	c.cookieFor(&cookie, src)
	_, o2 := macOffsets(msg)
	mac(&m, cookie[:], msg[:o2])
	return hmac.Equal(m[:], msg[o2:])
}

// createReply builds the cookie reply for handshake message msg that came
// from src.
func (c *cookieChecker) createReply(msg, src []byte, now time.Time) (cookieReply, error) {
	var r cookieReply
	if c.secretSet.IsZero() || now.Sub(c.secretSet) > CookieRefreshTime {
		if _, err := rand.Read(c.secret[:]); err != nil {
			return r, err
		}
		c.secretSet = now
	}
	var cookie [macSize]byte
	c.cookieFor(&cookie, src)
	if _, err := rand.Read(r.nonce[:]); err != nil {
		return r, err
	}
	o1, o2 := macOffsets(msg)
	r.receiver = leUint32(msg[4:])
	aead, _ := chacha20poly1305.NewX(c.keys.cookie[:])
	aead.Seal(r.cookie[:0], r.nonce[:], cookie[:], msg[o1:o2])
	return r, nil
}

// cookieGenerator adds macs to handshake messages sent to one peer and
// keeps the last cookie that peer gave us. Callers serialize access.
type cookieGenerator struct {
	keys        macKeys
	cookie      [macSize]byte
	cookieSet   time.Time
	lastMAC1    [macSize]byte
	hasLastMAC1 bool
}

func (g *cookieGenerator) addMACs(msg []byte, now time.Time) {
	o1, o2 := macOffsets(msg)
	var m [macSize]byte
	mac(&m, g.keys.mac1[:], msg[:o1])
	copy(msg[o1:o2], m[:])
	g.lastMAC1 = m
	g.hasLastMAC1 = true
	if g.cookieSet.IsZero() || now.Sub(g.cookieSet) > CookieRefreshTime {
		clear(msg[o2:])
		return
	}
	mac(&m, g.cookie[:], msg[:o2])
	copy(msg[o2:], m[:])
}

func (g *cookieGenerator) consumeReply(r *cookieReply, now time.Time) bool {
	if !g.hasLastMAC1 {
		return false
	}
	var cookie [macSize]byte
	aead, _ := chacha20poly1305.NewX(g.keys.cookie[:])
	if _, err := aead.Open(cookie[:0], r.nonce[:], r.cookie[:], g.lastMAC1[:]); err != nil {
		return false
	}
	g.cookie = cookie
	g.cookieSet = now
	return true
}
