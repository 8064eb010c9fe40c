package magicsock

import (
	"net/netip"
	"testing"

	"github.com/microlink-go/microlink/internal/disco"
	"github.com/microlink-go/microlink/internal/key"
	"github.com/microlink-go/microlink/internal/stun"
)

// FuzzReceive feeds arbitrary packets to both receive paths of a Conn
// that knows one peer. Nothing may panic, and only sealed disco from the
// peer may change its state.
func FuzzReceive(f *testing.F) {
	peerDisco := disco.NewSealer(key.NewPrivate(), 0)
	peerNode := key.NewPrivate().NodePublic()
	c := newNode(f, nil, Options{DERP: &captureDERP{sent: make(chan relayed, 1)}}).Conn
	c.SetPeers([]Peer{{Key: peerNode, DiscoKey: peerDisco.Public(), HomeDERP: 1}})
	for _, m := range []disco.Message{&disco.Ping{NodeKey: peerNode}, &disco.Pong{}, &disco.CallMeMaybe{MyNumber: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:9")}}} {
		f.Add(peerDisco.Seal(nil, c.DiscoPublic(), m), true)
		f.Add(peerDisco.Seal(nil, c.DiscoPublic(), m), false)
	}
	f.Add([]byte(wgMsg), false)
	f.Add(stun.Response(nil, stun.NewTxID(), netip.MustParseAddrPort("192.0.2.1:1")), false)
	f.Add([]byte{0, 0, 0x7a, 0x11, 0, 0, 1, 0}, false)
	f.Fuzz(func(t *testing.T, b []byte, viaDERP bool) {
		if viaDERP {
			c.ReceiveDERP(1, peerNode, b)
		} else {
			c.receiveUDP(b, netip.MustParseAddrPort("127.0.0.1:9"), nil, 0)
		}
	})
}

// FuzzCallMeMaybe hands a peer's call-me-maybe carrying arbitrary
// endpoint bytes to a Conn bound to every address: whatever they say, the
// peer ends with at most maxCallMeMaybeEndpoints candidates, none of
// which candidateOK refuses.
func FuzzCallMeMaybe(f *testing.F) {
	peerDisco := disco.NewSealer(key.NewPrivate(), 0)
	peerNode := key.NewPrivate().NodePublic()
	tm := fastTiming
	tm.callMeMaybeInterval = 0 // every message is handled
	c := newNodeTiming(f, nil, Options{DERP: &captureDERP{sent: make(chan relayed, 1)}, BindIPv4: netip.IPv4Unspecified()}, tm).Conn
	c.SetPeers([]Peer{{Key: peerNode, DiscoKey: peerDisco.Public(), HomeDERP: 1}})
	c.dropUDP.Store(true) // the pings to candidates go nowhere
	for _, eps := range [][]netip.AddrPort{
		{DERPAddr(900), netip.MustParseAddrPort("127.0.0.1:9")},
		{netip.MustParseAddrPort("198.18.0.1:9"), netip.MustParseAddrPort("[2001:db8::1]:9"), netip.MustParseAddrPort("224.0.0.1:9")},
	} {
		f.Add((&disco.CallMeMaybe{MyNumber: eps}).AppendMarshal(nil))
	}
	f.Fuzz(func(t *testing.T, plain []byte) {
		if len(plain) < 2 {
			return
		}
		plain[0] = byte(disco.TypeCallMeMaybe)
		c.ReceiveDERP(1, peerNode, disco.Seal(nil, peerDisco.Shared(c.DiscoPublic()), peerDisco.Public(), plain))
		st, _ := c.PeerStatus(peerNode)
		if len(st.Endpoints) > maxCallMeMaybeEndpoints {
			t.Fatalf("%d candidates", len(st.Endpoints))
		}
		for _, ap := range st.Endpoints {
			if !c.candidateOK(ap) {
				t.Fatalf("candidate %v accepted", ap)
			}
		}
		c.mu.Lock()
		c.outbox = nil
		clear(c.pings)
		c.mu.Unlock()
	})
}
