package wireguard

import (
	"bytes"
	"encoding/hex"
	"testing"
	"time"

	"github.com/microlink-go/microlink/internal/key"
	"golang.org/x/crypto/blake2s"
)

// Fixed keys for golden vectors.
func goldenKeys() (iPriv, rPriv, iEph, rEph key.Private) {
	for i := range 32 {
		iPriv[i] = byte(i + 1)
		rPriv[i] = byte(0x40 + i)
		iEph[i] = byte(0x80 + i)
		rEph[i] = byte(0xc0 + i)
	}
	return
}

var goldenTime = time.Unix(1700000000, 0)

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// goldenHandshake runs a deterministic handshake and returns both
// messages with macs.
func goldenHandshake(t testing.TB) (init [InitiationSize]byte, resp [ResponseSize]byte, ini, res handshake) {
	iPriv, rPriv, iEph, rEph := goldenKeys()
	iPub, rPub := iPriv.Public(), rPriv.Public()
	ss, err := iPriv.SharedSecret(rPub)
	if err != nil {
		t.Fatal(err)
	}
	m, err := ini.createInitiation(iPub, rPub, &ss, iEph, stampTAI64N(goldenTime), 0x01020304)
	if err != nil {
		t.Fatal(err)
	}
	m.marshal(&init)
	gi := cookieGenerator{keys: newMACKeys(rPub)}
	gi.addMACs(init[:], goldenTime)

	o, ok := openInitiation(rPriv, rPub, &m)
	if !ok || o.peer != iPub {
		t.Fatal("responder could not open the initiator's static key")
	}
	ss2, _ := rPriv.SharedSecret(iPub)
	ts, ok := o.openTimestamp(&ss2)
	if !ok || !ts.time().Equal(goldenTime) {
		t.Fatalf("timestamp %v ok=%v", ts.time(), ok)
	}
	res.consumeInitiation(&o)
	r, err := res.createResponse(iPub, rEph, 0x0a0b0c0d)
	if err != nil {
		t.Fatal(err)
	}
	r.marshal(&resp)
	gr := cookieGenerator{keys: newMACKeys(iPub)}
	gr.addMACs(resp[:], goldenTime)
	return
}

// Golden messages of goldenHandshake. The interop tests check that
// wireguard-go accepts these exact bytes.
const (
	goldenInitiation = "0100000004030201493e82fc74464a59268817623d2053c5eb8e2cc4a988b4fee179ec6b010d531dd05176bd13b73f6ff41b1954d28c67af91790e19d64a9030feed78efce91efb40d8a7b62a50bd07538b50822dff5bfb49f103fa1aa7d017d8a3bdc1cf4bcdf257f224e98c72dcaaf409bf572f6f3ba3c427bf5aa40b8b248ac0096d100000000000000000000000000000000"
	goldenResponse   = "020000000d0c0b0a04030201dc2cca31e8e43bbd91dff7e475cca3347eb478107d5bd765aba4ae4a30c35d4471fbfb25ae524206c1c07c8905e2ef5d70eb9f1137d2b3b9063d40169fc951c000000000000000000000000000000000"
	// Transport keys: initiator send = responder receive and vice versa.
	goldenKeyI2R = "af5a95a6df9bfdbb0852e1e2088df7d90a70ffb1b9b4c03ad8cd230fc0a7b5a7"
	goldenKeyR2I = "0a244bc47eb4888a67d501e77b13c16de3daa8db1f10c36494dc1bf32e134d96"
)

func TestHandshakeGolden(t *testing.T) {
	iPriv, _, _, _ := goldenKeys()
	init, resp, ini, res := goldenHandshake(t)
	if got := hex.EncodeToString(init[:]); got != goldenInitiation {
		t.Fatalf("initiation\n got %s\nwant %s", got, goldenInitiation)
	}
	if got := hex.EncodeToString(resp[:]); got != goldenResponse {
		t.Fatalf("response\n got %s\nwant %s", got, goldenResponse)
	}
	m, err := parseResponse(resp[:])
	if err != nil {
		t.Fatal(err)
	}
	if !ini.consumeResponse(iPriv, &m) {
		t.Fatal("initiator rejected the response")
	}
	is, ir, iInit, err := ini.deriveKeys()
	if err != nil || !iInit {
		t.Fatal("initiator keys", err)
	}
	rs, rr, rInit, err := res.deriveKeys()
	if err != nil || rInit {
		t.Fatal("responder keys", err)
	}
	if hex.EncodeToString(is[:]) != goldenKeyI2R || rr != is {
		t.Errorf("initiator->responder key %x / %x", is, rr)
	}
	if hex.EncodeToString(ir[:]) != goldenKeyR2I || rs != ir {
		t.Errorf("responder->initiator key %x / %x", ir, rs)
	}
	if ini.state != handshakeZeroed || ini.chainKey != ([32]byte{}) {
		t.Error("handshake secrets not cleared")
	}
}

func TestHandshakeTampered(t *testing.T) {
	iPriv, rPriv, _, _ := goldenKeys()
	for i := 8; i < InitiationSize-2*macSize; i += 7 {
		b := mustHex(t, goldenInitiation)
		b[i] ^= 1
		m, err := parseInitiation(b)
		if err != nil {
			t.Fatal(err)
		}
		o, ok := openInitiation(rPriv, rPriv.Public(), &m)
		if ok {
			ss, _ := rPriv.SharedSecret(iPriv.Public())
			if _, ok := o.openTimestamp(&ss); ok {
				t.Fatalf("initiation with byte %d flipped accepted", i)
			}
		}
	}
	_, resp, ini, _ := goldenHandshake(t)
	resp[50] ^= 1
	m, _ := parseResponse(resp[:])
	if ini.consumeResponse(iPriv, &m) {
		t.Fatal("tampered response accepted")
	}
	if ini.state != handshakeInitiationCreated {
		t.Fatal("failed response changed the handshake")
	}
}

// KDF test vectors (HKDF with HMAC-BLAKE2s) published with wireguard-go.
func TestKDF(t *testing.T) {
	for _, tc := range []struct{ key, input, t0, t1, t2 string }{
		{"746573742d6b6579", "746573742d696e707574",
			"6f0e5ad38daba1bea8a0d213688736f19763239305e0f58aba697f9ffc41c633",
			"df1194df20802a4fe594cde27e92991c8cae66c366e8106aaa937a55fa371e8a",
			"fac6e2745a325f5dc5d11a5b165aad08b0ada28e7b4e666b7c077934a4d76c24"},
		{"776972656775617264", "776972656775617264",
			"491d43bbfdaa8750aaf535e334ecbfe5129967cd64635101c566d4caefda96e8",
			"1e71a379baefd8a79aa4662212fcafe19a23e2b609a3db7d6bcba8f560e3d25f",
			"31e1ae48bddfbe5de38f295e5452b1909a1b4e38e183926af3780b0c1e1f0160"},
		{"", "",
			"8387b46bf43eccfcf349552a095d8315c4055beb90208fb1be23b894bc2ed5d0",
			"58a0e5f6faefccf4807bff1f05fa8a9217945762040bcec2f4b4a62bdfe0e86e",
			"0ce6ea98ec548f8e281e93e32db65621c45eb18dc6f0a7ad94178610a2f7338e"},
	} {
		k, in := mustHex(t, tc.key), mustHex(t, tc.input)
		var t0, t1, t2 [32]byte
		kdf3(&t0, &t1, &t2, k, in)
		if hex.EncodeToString(t0[:]) != tc.t0 || hex.EncodeToString(t1[:]) != tc.t1 || hex.EncodeToString(t2[:]) != tc.t2 {
			t.Errorf("kdf3(%s, %s) = %x %x %x", tc.key, tc.input, t0, t1, t2)
		}
		var u0, u1 [32]byte
		kdf2(&u0, &u1, k, in)
		if u0 != t0 || u1 != t1 {
			t.Errorf("kdf2(%s) differs from kdf3", tc.key)
		}
		var v0 [32]byte
		kdf1(&v0, k, in)
		if v0 != t0 {
			t.Errorf("kdf1(%s) differs from kdf3", tc.key)
		}
	}
}

func TestInitialHashes(t *testing.T) {
	ck := blake2s.Sum256([]byte("Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"))
	if initialChainKey != ck {
		t.Fatal("initial chaining key")
	}
	h := blake2s.Sum256(append(ck[:], "WireGuard v1 zx2c4 Jason@zx2c4.com"...))
	if initialHash != h {
		t.Fatal("initial hash")
	}
}

func TestMAC1Golden(t *testing.T) {
	// mac1 = BLAKE2s-128(key = BLAKE2s-256("mac1----" || responder public), message up to mac1).
	_, rPriv, _, _ := goldenKeys()
	rPub := rPriv.Public()
	b := mustHex(t, goldenInitiation)
	k := blake2s.Sum256(append([]byte("mac1----"), rPub[:]...))
	h, _ := blake2s.New128(k[:])
	h.Write(b[:116])
	if !bytes.Equal(h.Sum(nil), b[116:132]) {
		t.Fatal("mac1 of the golden initiation")
	}
	c := cookieChecker{keys: newMACKeys(rPub)}
	if !c.checkMAC1(b) {
		t.Fatal("checkMAC1 rejects a good mac1")
	}
	b[20] ^= 1
	if c.checkMAC1(b) {
		t.Fatal("checkMAC1 accepts a modified message")
	}
	other := cookieChecker{keys: newMACKeys(key.NewPrivate().Public())}
	if other.checkMAC1(mustHex(t, goldenInitiation)) {
		t.Fatal("mac1 valid for another key")
	}
}

func TestCookieRoundTrip(t *testing.T) {
	_, rPriv, _, _ := goldenKeys()
	rPub := rPriv.Public()
	now := goldenTime
	checker := cookieChecker{keys: newMACKeys(rPub)}
	gen := cookieGenerator{keys: newMACKeys(rPub)}
	msg := mustHex(t, goldenInitiation)
	gen.addMACs(msg, now)
	src := []byte{127, 0, 0, 1, 0x12, 0x34}
	if checker.checkMAC2(msg, src, now) {
		t.Fatal("mac2 valid without a cookie")
	}
	r, err := checker.createReply(msg, src, now)
	if err != nil {
		t.Fatal(err)
	}
	if r.receiver != 0x01020304 {
		t.Fatalf("cookie reply receiver %#x", r.receiver)
	}
	var rb [CookieReplySize]byte
	r.marshal(&rb)
	r2, err := parseCookieReply(rb[:])
	if err != nil || r2 != r {
		t.Fatal("cookie reply round trip")
	}
	bad := r2
	bad.cookie[0] ^= 1
	if gen.consumeReply(&bad, now) {
		t.Fatal("tampered cookie accepted")
	}
	if !gen.consumeReply(&r2, now) {
		t.Fatal("cookie reply rejected")
	}
	msg2 := mustHex(t, goldenInitiation)
	gen.addMACs(msg2, now.Add(time.Second))
	if bytes.Equal(msg2[132:], make([]byte, 16)) {
		t.Fatal("no mac2 with a fresh cookie")
	}
	if !checker.checkMAC2(msg2, src, now.Add(time.Second)) {
		t.Fatal("mac2 rejected")
	}
	if checker.checkMAC2(msg2, []byte{127, 0, 0, 2, 0x12, 0x34}, now.Add(time.Second)) {
		t.Fatal("mac2 valid for another source")
	}
	if checker.checkMAC2(msg2, src, now.Add(CookieRefreshTime+2*time.Second)) {
		t.Fatal("mac2 valid after the secret expired")
	}
	// An expired cookie is not used.
	msg3 := mustHex(t, goldenInitiation)
	gen.addMACs(msg3, now.Add(CookieRefreshTime+time.Second))
	if !bytes.Equal(msg3[132:], make([]byte, 16)) {
		t.Fatal("mac2 from an expired cookie")
	}
}

func TestTAI64N(t *testing.T) {
	if got := hex.EncodeToString(func() []byte { s := stampTAI64N(time.Unix(0, 0)); return s[:] }()); got != "400000000000000a00000000" {
		t.Errorf("epoch = %s", got)
	}
	s := stampTAI64N(time.Unix(1700000000, 123456789))
	if got := hex.EncodeToString(s[:]); got != "400000006553f10a07000000" {
		t.Errorf("stamp = %s", got)
	}
	// Nanoseconds are whitened to multiples of 2^24.
	if s.time() != time.Unix(1700000000, 123456789&^(1<<24-1)) {
		t.Errorf("time = %v", s.time())
	}
	a := stampTAI64N(goldenTime)
	b := stampTAI64N(goldenTime.Add(20 * time.Millisecond))
	c := stampTAI64N(goldenTime.Add(time.Millisecond))
	if !b.after(a) || a.after(b) || a.after(a) {
		t.Error("ordering")
	}
	if c.after(a) {
		t.Error("1 ms apart must whiten to the same stamp")
	}
}

func TestReplayWindow(t *testing.T) {
	var w replayWindow
	accept := func(c uint64, want bool) {
		t.Helper()
		if got := w.accept(c); got != want {
			t.Fatalf("accept(%d) = %v, want %v", c, got, want)
		}
	}
	accept(0, true)
	accept(0, false) // duplicate
	accept(1, true)
	accept(5, true)
	accept(3, true) // out of order, inside the window
	accept(4, true)
	accept(3, false)
	accept(2, true)

	w.reset()
	top := uint64(replayWindowSize + 100)
	accept(top, true)
	accept(top-replayWindowSize, true)    // oldest inside the window
	accept(top-replayWindowSize-1, false) // just too old
	accept(top-replayWindowSize, false)   // duplicate at the edge
	accept(top-1, true)

	// Wraparound: moving the window by its whole size clears the ring.
	w.reset()
	for c := range uint64(replayRingBlocks * replayBlockBits) {
		accept(c, true)
	}
	next := uint64(2*replayRingBlocks*replayBlockBits) + 7
	accept(next, true)
	for c := next - replayWindowSize; c < next; c++ {
		accept(c, true) // unseen counters in the new window, though their bits were set a ring ago
	}
	accept(next-replayWindowSize-1, false)
	accept(next, false)

	// The window edge after a large jump.
	w.reset()
	accept(63, true)
	accept(64, true)
	accept(63, false)
	accept(64+replayWindowSize, true)
	accept(64, false) // exactly window size behind: inside, and still remembered
	accept(65, true)
	accept(63, false) // one further back: too old
}

func TestReplayWindowLimits(t *testing.T) {
	var w replayWindow
	if w.accept(RejectAfterMessages) {
		t.Fatal("counter at RejectAfterMessages accepted")
	}
	if !w.accept(RejectAfterMessages - 1) {
		t.Fatal("last valid counter rejected")
	}
	if w.accept(RejectAfterMessages - 1) {
		t.Fatal("duplicate accepted")
	}
	if w.accept(0) {
		t.Fatal("ancient counter accepted")
	}
}

// TestReplayWindowSize: the window holds 8128 counters behind the newest,
// as wireguard-go's and Linux's do, since every message may arrive twice,
// direct and relayed, with the relayed copy far behind.
func TestReplayWindowSize(t *testing.T) {
	var w replayWindow
	if !w.accept(8128) || !w.accept(0) {
		t.Fatal("counter 8128 behind the newest rejected")
	}
	if w.accept(0) {
		t.Fatal("duplicate accepted")
	}
	if !w.accept(9000) || w.accept(871) || !w.accept(872) {
		t.Fatal("window edge not at 8128 counters")
	}
}
