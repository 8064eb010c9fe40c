package wgtest

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microlink-go/microlink/internal/key"
	"github.com/microlink-go/microlink/internal/wireguard"
	"golang.zx2c4.com/wireguard/device"
)

var (
	ourAddr = netip.MustParseAddr("100.64.0.1")
	wgAddr  = netip.MustParseAddr("100.64.0.2")
)

// clock is a settable clock for our device, starting at the real time.
type clock struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.off)
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.off += d
	c.mu.Unlock()
}

// pair is our device and a wireguard-go device wired together.
type pair struct {
	t      *testing.T
	clock  *clock
	ours   *wireguard.Device
	ourKey key.Private
	wg     *device.Device
	wgKey  key.Private
	bind   *chanBind
	tun    *chanTUN

	delivered chan []byte // packets our device delivered

	mu         sync.Mutex
	fromWG     [][]byte // every message wireguard-go sent us
	ourSent    [][]byte // every message we sent
	stopPump   chan struct{}
	pumpDone   sync.WaitGroup
	deliveries atomic.Int64
}

func newPair(t *testing.T) *pair { return newPairConfig(t, nil) }

// newPairConfig is newPair with a chance to change our device's config.
func newPairConfig(t *testing.T, mutate func(*pair, *wireguard.Config)) *pair {
	t.Helper()
	before := runtime.NumGoroutine()
	p := &pair{
		t:         t,
		clock:     &clock{},
		ourKey:    key.NewPrivate(),
		wgKey:     key.NewPrivate(),
		bind:      newChanBind(),
		tun:       newChanTUN(),
		delivered: make(chan []byte, 64),
		stopPump:  make(chan struct{}),
	}
	cfg := wireguard.Config{
		PrivateKey: p.ourKey,
		Now:        p.clock.Now,
		Send: func(_ key.NodePublic, msg []byte) error {
			m := bytes.Clone(msg)
			p.mu.Lock()
			p.ourSent = append(p.ourSent, m)
			p.mu.Unlock()
			select {
			case p.bind.in <- m:
			default:
			}
			return nil
		},
		Deliver: func(_ key.NodePublic, pkt []byte) {
			p.deliveries.Add(1)
			select {
			case p.delivered <- bytes.Clone(pkt):
			default:
			}
		},
	}
	if mutate != nil {
		mutate(p, &cfg)
	}
	ours, err := wireguard.NewDevice(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p.ours = ours
	ours.SetPeers([]wireguard.PeerConfig{{
		Key:        p.wgKey.NodePublic(),
		AllowedIPs: []netip.Prefix{netip.PrefixFrom(wgAddr, 32)},
	}})

	p.wg = device.NewDevice(p.tun, p.bind, device.NewLogger(device.LogLevelError, "wg: "))
	pub := p.ourKey.Public()
	uapi := fmt.Sprintf("private_key=%s\npublic_key=%s\nallowed_ip=%s/32\nendpoint=127.0.0.1:1\n",
		hex.EncodeToString(p.wgKey[:]), hex.EncodeToString(pub[:]), ourAddr)
	if err := p.wg.IpcSet(uapi); err != nil {
		t.Fatal(err)
	}
	if err := p.wg.Up(); err != nil {
		t.Fatal(err)
	}

	p.pumpDone.Add(1)
	go func() {
		defer p.pumpDone.Done()
		for {
			select {
			case <-p.stopPump:
				return
			case m := <-p.bind.out:
				p.mu.Lock()
				p.fromWG = append(p.fromWG, bytes.Clone(m))
				p.mu.Unlock()
				p.ours.ReceiveFrom(m, endpoint{}.DstToBytes())
			}
		}
	}()

	t.Cleanup(func() {
		close(p.stopPump)
		p.pumpDone.Wait()
		p.wg.Close()
		p.ours.Close()
		deadline := time.Now().Add(2 * time.Second)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > before {
			t.Errorf("goroutines leaked: %d before, %d after", before, n)
		}
	})
	return p
}

// packet builds an IPv4 UDP packet of n bytes with a recognizable payload.
func packet(src, dst netip.Addr, n int, seed byte) []byte {
	b := make([]byte, n)
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(n))
	b[8] = 64
	b[9] = 17
	s, d := src.As4(), dst.As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(b[10:], ^uint16(sum))
	for i := 20; i < n; i++ {
		b[i] = seed + byte(i*7)
	}
	return b
}

func wait[T any](t *testing.T, c <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// sendOurs sends pkt from our device and checks wireguard-go delivers it.
func (p *pair) sendOurs(pkt []byte) {
	p.t.Helper()
	if err := p.ours.SendTo(p.wgKey.NodePublic(), pkt); err != nil {
		p.t.Fatal(err)
	}
	got := wait(p.t, p.tun.fromWG, "wireguard-go to deliver our packet")
	if !bytes.Equal(got, pkt) {
		p.t.Fatalf("wireguard-go delivered %d bytes, want our %d-byte packet intact", len(got), len(pkt))
	}
}

// sendWG injects pkt into wireguard-go and checks our device delivers it.
func (p *pair) sendWG(pkt []byte) {
	p.t.Helper()
	p.tun.toWG <- pkt
	got := wait(p.t, p.delivered, "our device to deliver wireguard-go's packet")
	if !bytes.Equal(got, pkt) {
		p.t.Fatalf("we delivered %d bytes, want wireguard-go's %d-byte packet intact", len(got), len(pkt))
	}
}

func (p *pair) countOurs(typ byte) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, m := range p.ourSent {
		if m[0] == typ {
			n++
		}
	}
	return n
}

func TestWeInitiate(t *testing.T) {
	p := newPair(t)
	p.sendOurs(packet(ourAddr, wgAddr, 100, 1))
	if n := p.countOurs(wireguard.TypeInitiation); n != 1 {
		t.Fatalf("we sent %d initiations", n)
	}
	p.sendWG(packet(wgAddr, ourAddr, 1280, 2))
	p.sendOurs(packet(ourAddr, wgAddr, 1280, 3))
	for i := range 20 {
		p.sendWG(packet(wgAddr, ourAddr, 40+i*61, byte(i)))
		p.sendOurs(packet(ourAddr, wgAddr, 40+i*61, byte(i)))
	}
	if s := p.ours.Stats(); s.HandshakesCompleted != 1 {
		t.Errorf("handshakes = %d", s.HandshakesCompleted)
	}
}

func TestTheyInitiate(t *testing.T) {
	p := newPair(t)
	p.sendWG(packet(wgAddr, ourAddr, 200, 1))
	if n := p.countOurs(wireguard.TypeInitiation); n != 0 {
		t.Fatalf("we sent %d initiations, want to be the responder", n)
	}
	if n := p.countOurs(wireguard.TypeResponse); n != 1 {
		t.Fatalf("we sent %d responses", n)
	}
	p.sendOurs(packet(ourAddr, wgAddr, 1280, 2))
	p.sendWG(packet(wgAddr, ourAddr, 20, 0)) // header-only packet
	st, ok := p.ours.PeerStats(p.wgKey.NodePublic())
	if !ok || !st.HasSession || st.RxPackets < 2 || st.LastHandshake.IsZero() {
		t.Fatalf("peer stats %+v", st)
	}
}

func TestRekeyAfterExpiry(t *testing.T) {
	p := newPair(t)
	p.sendOurs(packet(ourAddr, wgAddr, 100, 1))
	p.sendWG(packet(wgAddr, ourAddr, 100, 2))

	// Our keys expire: the next packet waits for a new handshake, which
	// wireguard-go answers, and traffic continues both ways.
	time.Sleep(2 * device.HandshakeInitationRate)
	p.clock.Advance(wireguard.RejectAfterTime + time.Second)
	p.ours.EvaluateTimers()
	p.sendOurs(packet(ourAddr, wgAddr, 300, 3))
	if n := p.countOurs(wireguard.TypeInitiation); n != 2 {
		t.Fatalf("we sent %d initiations, want a new one after expiry", n)
	}
	p.sendWG(packet(wgAddr, ourAddr, 300, 4))
	p.sendOurs(packet(ourAddr, wgAddr, 1280, 5))
	if s := p.ours.Stats(); s.HandshakesCompleted != 2 {
		t.Errorf("handshakes = %d", s.HandshakesCompleted)
	}
}

func TestReplayRejected(t *testing.T) {
	p := newPair(t)
	p.sendOurs(packet(ourAddr, wgAddr, 100, 1))
	pkt := packet(wgAddr, ourAddr, 500, 9)
	p.sendWG(pkt)
	p.mu.Lock()
	var replay []byte
	for _, m := range p.fromWG {
		if m[0] == wireguard.TypeTransport && len(m) > wireguard.KeepaliveSize {
			replay = bytes.Clone(m)
		}
	}
	p.mu.Unlock()
	if replay == nil {
		t.Fatal("no transport message from wireguard-go captured")
	}
	before := p.deliveries.Load()
	if _, ok := p.ours.Receive(replay); ok {
		t.Fatal("replayed message accepted")
	}
	if p.deliveries.Load() != before {
		t.Fatal("replayed packet delivered twice")
	}
	if s := p.ours.Stats(); s.Replays != 1 {
		t.Errorf("replays = %d", s.Replays)
	}
	// The session is unharmed.
	p.sendWG(packet(wgAddr, ourAddr, 60, 10))
}

func TestInnerSourceChecked(t *testing.T) {
	p := newPair(t)
	p.sendOurs(packet(ourAddr, wgAddr, 100, 1))
	// wireguard-go routes to us anything in our allowed IPs; a packet with
	// a source outside wireguard-go's own allowed IPs on our side is
	// dropped by us.
	p.tun.toWG <- packet(netip.MustParseAddr("100.64.0.77"), ourAddr, 80, 1)
	p.sendWG(packet(wgAddr, ourAddr, 90, 2)) // the next good one arrives, and only it
	if p.deliveries.Load() != 1 {
		t.Fatalf("deliveries = %d", p.deliveries.Load())
	}
}

// Golden messages from the unit tests of internal/wireguard, made with
// fixed keys: wireguard-go must accept them as they are.
const (
	goldenInitiation = "0100000004030201493e82fc74464a59268817623d2053c5eb8e2cc4a988b4fee179ec6b010d531dd05176bd13b73f6ff41b1954d28c67af91790e19d64a9030feed78efce91efb40d8a7b62a50bd07538b50822dff5bfb49f103fa1aa7d017d8a3bdc1cf4bcdf257f224e98c72dcaaf409bf572f6f3ba3c427bf5aa40b8b248ac0096d100000000000000000000000000000000"
	goldenResponse   = "020000000d0c0b0a04030201dc2cca31e8e43bbd91dff7e475cca3347eb478107d5bd765aba4ae4a30c35d4471fbfb25ae524206c1c07c8905e2ef5d70eb9f1137d2b3b9063d40169fc951c000000000000000000000000000000000"
)

func TestGoldenMessagesAcceptedByWireguardGo(t *testing.T) {
	var iPriv, rPriv key.Private
	for i := range 32 {
		iPriv[i] = byte(i + 1)
		rPriv[i] = byte(0x40 + i)
	}
	iPub, rPub := iPriv.Public(), rPriv.Public()
	b, _ := hex.DecodeString(goldenInitiation)

	var checker device.CookieChecker
	checker.Init(device.NoisePublicKey(rPub))
	if !checker.CheckMAC1(b) {
		t.Fatal("wireguard-go rejects mac1 of the golden initiation")
	}
	rb, _ := hex.DecodeString(goldenResponse)
	var checkerI device.CookieChecker
	checkerI.Init(device.NoisePublicKey(iPub))
	if !checkerI.CheckMAC1(rb) {
		t.Fatal("wireguard-go rejects mac1 of the golden response")
	}

	tun := newChanTUN()
	bind := newChanBind()
	dev := device.NewDevice(tun, bind, device.NewLogger(device.LogLevelError, ""))
	defer dev.Close()
	cfg := fmt.Sprintf("private_key=%s\npublic_key=%s\nallowed_ip=100.64.0.1/32\n", hex.EncodeToString(rPriv[:]), hex.EncodeToString(iPub[:]))
	if err := dev.IpcSet(cfg); err != nil {
		t.Fatal(err)
	}
	if err := dev.Up(); err != nil {
		t.Fatal(err)
	}
	var m device.MessageInitiation
	m.Type = binary.LittleEndian.Uint32(b)
	m.Sender = binary.LittleEndian.Uint32(b[4:])
	copy(m.Ephemeral[:], b[8:40])
	copy(m.Static[:], b[40:88])
	copy(m.Timestamp[:], b[88:116])
	if peer := dev.ConsumeMessageInitiation(&m); peer == nil {
		t.Fatal("wireguard-go rejects the golden initiation")
	}
	m.Static[3] ^= 1
	if peer := dev.ConsumeMessageInitiation(&m); peer != nil {
		t.Fatal("wireguard-go accepts a tampered initiation; the check above proves nothing")
	}
}

func TestCookieReplyUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for wireguard-go's 5 s handshake retransmission")
	}
	var cookies atomic.Int64
	p := newPairConfig(t, func(p *pair, c *wireguard.Config) {
		c.UnderLoad = func() bool { return true }
		c.SendCookieReply = func(src, msg []byte) error {
			if !bytes.Equal(src, endpoint{}.DstToBytes()) {
				t.Errorf("cookie reply for source %x", src)
			}
			cookies.Add(1)
			p.bind.in <- bytes.Clone(msg)
			return nil
		}
	})
	// wireguard-go's first initiation has no mac2: we answer with a
	// cookie. Its retransmission carries mac2 made from our cookie and is
	// accepted.
	pkt := packet(wgAddr, ourAddr, 120, 1)
	p.tun.toWG <- pkt
	select {
	case got := <-p.delivered:
		if !bytes.Equal(got, pkt) {
			t.Fatal("packet changed")
		}
	case <-time.After(device.RekeyTimeout + 3*time.Second):
		t.Fatal("no handshake after the cookie reply")
	}
	if cookies.Load() < 1 {
		t.Fatal("no cookie reply sent")
	}
	if n := p.countOurs(wireguard.TypeResponse); n != 1 {
		t.Fatalf("responses = %d", n)
	}
}
