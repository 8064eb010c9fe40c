package derp

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/crypto/nacl/box"

	"github.com/microlink-go/microlink/internal/key"
)

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestMagicBytes(t *testing.T) {
	if got, want := []byte(Magic), mustHex(t, "44455250f09f9491"); !bytes.Equal(got, want) {
		t.Fatalf("Magic = % x, want % x", got, want)
	}
}

func TestFrameHeaderGolden(t *testing.T) {
	for _, tc := range []struct {
		t    frameType
		n    int
		want string
	}{
		{frameSendPacket, 0x0102, "0400000102"},
		{frameKeepAlive, 0, "0600000000"},
		{frameRestarting, 8, "1500000008"},
		{frameServerKey, 0x7eadbeef, "017eadbeef"}, // fits a 32-bit int
	} {
		got := appendFrameHeader(nil, tc.t, tc.n)
		if hex.EncodeToString(got) != tc.want {
			t.Errorf("header(%#x, %d) = %x, want %s", byte(tc.t), tc.n, got, tc.want)
		}
		ft, n := parseFrameHeader(got)
		if ft != tc.t || int(n) != tc.n {
			t.Errorf("parse(%x) = %#x, %d", got, byte(ft), n)
		}
	}
}

func TestServerKeyGolden(t *testing.T) {
	var k key.NodePublic
	for i := range k {
		k[i] = byte(i)
	}
	frame := appendFrame(nil, frameServerKey, append([]byte(Magic), k[:]...))
	want := "0100000028" + "44455250f09f9491" +
		"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
	if hex.EncodeToString(frame) != want {
		t.Fatalf("ServerKey frame = %x\nwant %s", frame, want)
	}
	ft, p, err := readFrame(bytes.NewReader(frame), 1<<10, nil)
	if err != nil || ft != frameServerKey {
		t.Fatalf("readFrame: %v %v", ft, err)
	}
	got, err := parseServerKey(append(p, 0xff, 0xff)) // future bytes are ignored
	if err != nil || got != k {
		t.Fatalf("parseServerKey = %v, %v", got, err)
	}
	p[0] = 'X'
	if _, err := parseServerKey(p); !errors.Is(err, errBadMagic) {
		t.Errorf("bad magic accepted: %v", err)
	}
	if _, err := parseServerKey(p[:39]); err == nil {
		t.Errorf("short ServerKey accepted")
	}
}

func TestReadFrameRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	type frame struct {
		t frameType
		p []byte
	}
	var frames []frame
	for i, n := range []int{0, 1, 8, 1000, 5000, 70000} {
		p := make([]byte, n)
		rand.Read(p)
		f := frame{frameType(i + 1), p}
		frames = append(frames, f)
		buf.Write(appendFrame(nil, f.t, f.p))
	}
	scratch := make([]byte, 16)
	for _, want := range frames {
		ft, p, err := readFrame(&buf, 1<<20, scratch)
		if err != nil {
			t.Fatal(err)
		}
		if ft != want.t || !bytes.Equal(p, want.p) {
			t.Fatalf("got type %#x len %d, want %#x len %d", byte(ft), len(p), byte(want.t), len(want.p))
		}
	}
	if _, _, err := readFrame(&buf, 1<<20, nil); err == nil {
		t.Fatal("read past end succeeded")
	}
}

func TestReadFrameLimits(t *testing.T) {
	big := appendFrameHeader(nil, frameRecvPacket, 1<<20+1)
	if _, _, err := readFrame(bytes.NewReader(big), 1<<20, nil); !errors.Is(err, errFrameSize) {
		t.Errorf("oversize frame: err = %v", err)
	}
	short := append(appendFrameHeader(nil, frameRecvPacket, 10), 1, 2, 3)
	if _, _, err := readFrame(bytes.NewReader(short), 1<<20, nil); err == nil {
		t.Errorf("truncated frame accepted")
	}
}

func TestParsePeerGone(t *testing.T) {
	k := key.NewPrivate().NodePublic()
	m, err := parsePeerGone(k[:])
	if err != nil || m.Key != k || m.Reason != PeerGoneDisconnected {
		t.Errorf("no reason: %+v %v", m, err)
	}
	m, err = parsePeerGone(append(k[:], 0x01))
	if err != nil || m.Key != k || m.Reason != PeerGoneNotHere {
		t.Errorf("not here: %+v %v", m, err)
	}
	if _, err := parsePeerGone(k[:31]); err == nil {
		t.Errorf("short PeerGone accepted")
	}
}

func TestParsePeerPresent(t *testing.T) {
	k := key.NewPrivate().NodePublic()
	p := append([]byte(nil), k[:]...)
	p = append(p, mustHex(t, "00000000000000000000ffff7f000001")...) // ::ffff:127.0.0.1
	p = append(p, 0x1f, 0x90, 0x03)                                  // port 8080, flags 3
	m, err := parsePeerPresent(p)
	want := PeerPresent{Key: k, AddrPort: netip.MustParseAddrPort("127.0.0.1:8080"), Flags: 3}
	if err != nil || m != want {
		t.Errorf("full: %+v %v, want %+v", m, err, want)
	}
	if m, err := parsePeerPresent(k[:]); err != nil || m != (PeerPresent{Key: k}) {
		t.Errorf("key only: %+v %v", m, err)
	}
	if m, err := parsePeerPresent(p[:len(p)-1]); err != nil || m.Flags != 0 || !m.AddrPort.IsValid() {
		t.Errorf("no flags: %+v %v", m, err)
	}
	if _, err := parsePeerPresent(p[:20]); err == nil {
		t.Errorf("short PeerPresent accepted")
	}
}

func TestParseRestarting(t *testing.T) {
	m, err := parseRestarting(mustHex(t, "000003e800002710"))
	if err != nil || m.ReconnectIn != time.Second || m.TryFor != 10*time.Second {
		t.Errorf("got %+v %v", m, err)
	}
	if _, err := parseRestarting(make([]byte, 7)); err == nil {
		t.Errorf("short Restarting accepted")
	}
}

func TestSealClientInfo(t *testing.T) {
	client, server := key.NewPrivate(), key.NewPrivate()
	p, err := sealClientInfo(client, server.NodePublic(), clientInfo{Version: 2, CanAckPings: true})
	if err != nil {
		t.Fatal(err)
	}
	pub := client.Public()
	if !bytes.Equal(p[:keyLen], pub[:]) {
		t.Fatalf("payload does not start with the client key")
	}
	var nonce [nonceLen]byte
	copy(nonce[:], p[keyLen:])
	sk, ck := server, client.Public()
	msg, ok := box.Open(nil, p[keyLen+nonceLen:], &nonce, (*[32]byte)(&ck), (*[32]byte)(&sk))
	if !ok {
		t.Fatal("box does not open with the server key")
	}
	if got, want := string(msg), `{"version":2,"CanAckPings":true}`; got != want {
		t.Errorf("ClientInfo JSON = %s, want %s", got, want)
	}
	other := key.NewPrivate()
	if _, ok := box.Open(nil, p[keyLen+nonceLen:], &nonce, (*[32]byte)(&ck), (*[32]byte)(&other)); ok {
		t.Error("box opens with the wrong key")
	}
}

func TestOpenServerInfo(t *testing.T) {
	client, server := key.NewPrivate(), key.NewPrivate()
	var nonce [nonceLen]byte
	rand.Read(nonce[:])
	cpub, spriv := client.Public(), server
	sealed := box.Seal(nonce[:], []byte(`{"version":2,"TokenBucketBytesPerSecond":100,"TokenBucketBytesBurst":200}`),
		&nonce, (*[32]byte)(&cpub), (*[32]byte)(&spriv))
	si, err := openServerInfo(client, server.NodePublic(), sealed)
	want := ServerInfo{Version: 2, TokenBucketBytesPerSecond: 100, TokenBucketBytesBurst: 200}
	if err != nil || si != want {
		t.Fatalf("got %+v %v, want %+v", si, err, want)
	}
	sealed[len(sealed)-1] ^= 1
	if _, err := openServerInfo(client, server.NodePublic(), sealed); err == nil {
		t.Error("tampered ServerInfo accepted")
	}
	if _, err := openServerInfo(client, server.NodePublic(), sealed[:10]); err == nil {
		t.Error("short ServerInfo accepted")
	}
}

func TestTokenBucket(t *testing.T) {
	var b tokenBucket
	now := time.Unix(1000, 0)
	if !b.allow(now, 1<<20) {
		t.Fatal("unlimited bucket refused")
	}
	b.set(ServerInfo{TokenBucketBytesPerSecond: 1000, TokenBucketBytesBurst: 1500})
	if !b.allow(now, 1000) || b.allow(now, 1000) {
		t.Fatal("burst not applied")
	}
	if !b.allow(now.Add(600*time.Millisecond), 1000) {
		t.Fatal("bucket did not refill")
	}
	if b.allow(now.Add(600*time.Millisecond), 200) {
		t.Fatal("bucket overfilled")
	}
}
