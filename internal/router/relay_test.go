package router

import (
	"context"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/microlink-go/microlink/internal/packet"
	"github.com/microlink-go/microlink/internal/tcp"
)

// fakeStack is the node's side of a relay: its TCP stack and a queue of
// what it sends to the tailnet, which the test hands to a peer.
type fakeStack struct {
	tcp  *tcp.Stack
	out  func(pkt []byte)
	mu   sync.Mutex
	sent [][]byte
}

func (s *fakeStack) TCP() *tcp.Stack { return s.tcp }
func (s *fakeStack) Outbound(pkt []byte) error {
	if s.out != nil {
		s.out(pkt)
		return nil
	}
	s.mu.Lock()
	s.sent = append(s.sent, append([]byte(nil), pkt...))
	s.mu.Unlock()
	return nil
}

var peerAddr = netip.MustParseAddr("100.64.0.2")

// TestRelayTCP: a peer's TCP connection to a routed address ends in the
// node's TCP and goes on through a host connection; data and half-closes
// pass both ways.
func TestRelayTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				io.Copy(c, c) // echo until the peer's FIN, then close
				c.Close()
			}()
		}
	}()

	// The peer's TCP sends straight into the relay; the node's TCP
	// (inside the relay) answers straight into the peer's.
	var peer *tcp.Stack
	node := &fakeStack{}
	node.tcp = tcp.New(tcp.Config{Output: func(pkt []byte) error { go peer.Inbound(src(pkt)); return nil }})
	node.out = func(pkt []byte) { go peer.Inbound(src(pkt)) }
	var relay *Relay
	peer = tcp.New(tcp.Config{Output: func(pkt []byte) error {
		c := append([]byte(nil), pkt...)
		go relay.Deliver(c)
		return nil
	}})
	relay = NewRelay(RelayConfig{Stack: node})
	defer relay.Close()
	defer node.tcp.Close()
	defer peer.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dst := ln.Addr().(*net.TCPAddr).AddrPort()
	c, err := peer.Dial(ctx, peerAddr, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), dst.Port()))
	if err != nil {
		t.Fatal(err)
	}
	msg := make([]byte, 300<<10)
	for i := range msg {
		msg[i] = byte(i * 7)
	}
	go func() {
		c.Write(msg)
		c.CloseWrite()
	}()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || len(got) != len(msg) || string(got) != string(msg) {
		t.Fatalf("echo through the relay: %d of %d bytes, %v", len(got), len(msg), err)
	}
	c.Close()
}

// src decodes a packet into the arguments of tcp.Stack.Inbound.
func src(pkt []byte) (netip.Addr, netip.Addr, []byte) {
	var p packet.Parsed
	if p.Decode(pkt) != nil {
		return netip.Addr{}, netip.Addr{}, nil
	}
	return p.Src, p.Dst, append([]byte(nil), p.Transport()...)
}

// TestRelayUDP: a peer's datagrams to a routed address leave from a host
// socket, and the answers come back as packets from that address.
func TestRelayUDP(t *testing.T) {
	echo, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := echo.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			echo.WriteToUDPAddrPort(append([]byte("echo: "), buf[:n]...), from)
		}
	}()
	node := &fakeStack{tcp: tcp.New(tcp.Config{Output: func([]byte) error { return nil }})}
	defer node.tcp.Close()
	relay := NewRelay(RelayConfig{Stack: node})
	defer relay.Close()
	dst := echo.LocalAddr().(*net.UDPAddr).AddrPort()
	from := netip.AddrPortFrom(peerAddr, 5555)
	b := make([]byte, 200)
	for i := range 3 {
		n, _ := packet.BuildUDP(b, from, dst, []byte{'a' + byte(i)})
		relay.Deliver(b[:n])
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		node.mu.Lock()
		n := len(node.sent)
		node.mu.Unlock()
		if n == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d answers", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i, pkt := range node.sent {
		var p packet.Parsed
		if p.Decode(pkt) != nil || p.SrcAddrPort() != dst || p.DstAddrPort() != from || string(p.Payload()) != "echo: "+string(rune('a'+i)) || !p.ChecksumsValid() {
			t.Fatalf("answer %d: %v %q", i, p.String(), p.Payload())
		}
	}
	relay.mu.Lock()
	flows := len(relay.udp)
	relay.mu.Unlock()
	if flows != 1 {
		t.Fatalf("%d UDP flows for one peer socket", flows)
	}
}

// TestRelayPing: echo requests go out through the host's ICMP sockets and
// the replies come back with the peer's identifier.
func TestRelayPing(t *testing.T) {
	ok := false
	defer func() {
		if !ok && !t.Skipped() && !t.Failed() {
			t.Fatal("did not run")
		}
	}()
	runInNetns(t, func() {
		// Let every group open ICMP sockets in this namespace.
		if err := os.WriteFile("/proc/sys/net/ipv4/ping_group_range", []byte("0 2147483647"), 0o644); err != nil {
			t.Error(err)
			return
		}
		node := &fakeStack{tcp: tcp.New(tcp.Config{Output: func([]byte) error { return nil }})}
		defer node.tcp.Close()
		relay := NewRelay(RelayConfig{Stack: node})
		defer relay.Close()
		b := make([]byte, 200)
		dst := netip.MustParseAddr("127.0.0.1")
		n, _ := packet.BuildEchoRequest(b, peerAddr, dst, 0x4242, 7, []byte("ping through the relay"))
		relay.Deliver(b[:n])
		for range 500 {
			node.mu.Lock()
			got := len(node.sent)
			node.mu.Unlock()
			if got > 0 {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		node.mu.Lock()
		defer node.mu.Unlock()
		if len(node.sent) != 1 {
			t.Errorf("%d replies", len(node.sent))
			return
		}
		var p packet.Parsed
		if p.Decode(node.sent[0]) != nil || !p.IsEchoReply() || p.Src != dst || p.Dst != peerAddr || p.ICMPID != 0x4242 || p.ICMPSeq != 7 ||
			string(p.Payload()) != "ping through the relay" || !p.ChecksumsValid() {
			t.Errorf("reply: %v %q", p.String(), p.Payload())
		}
		ok = true
	})
}
