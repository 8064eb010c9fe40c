package attacktest

import (
	"context"
	"encoding/binary"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/microlink-go/microlink/internal/packet"
	"github.com/microlink-go/microlink/interop/lab"
	"github.com/microlink-go/microlink/interop/tcpxfer"
)

// victimTCPPort is where the victim serves TCP (ListenTCP).
const victimTCPPort = 7000

// maxHalfOpen is the victim's limit of connections from peers whose
// handshake is not complete (tcp.Config.MaxHalfOpen's default).
const maxHalfOpen = 16

// synFlood sends the victim, through the hostile node's WireGuard session
// (the ACL lets every peer reach every port), SYNs to its TCP listener
// from random ports at 5,000 a second, and never completes a handshake:
// the hostile node drops the SYN-ACKs. Meanwhile the real peer's kernel
// connects to the same listener again and again, through its TUN device,
// and pushes 64 KiB on each connection. Every one of its connections
// must succeed; the victim may keep at most maxHalfOpen half-open
// connections, and must answer the rest of the flood with SYN cookies.
func (s *suite) synFlood(ctx context.Context, t *testing.T) string {
	h := s.h
	lab.WaitFor(t, 3*time.Second, "a session with the victim", func() bool {
		h.wg.SendPacket(h.echoRequest(0))
		time.Sleep(50 * time.Millisecond)
		return h.replies()[0] > 0
	})
	before, err := s.v.stats(false)
	if err != nil {
		t.Fatal(err)
	}
	dst := netip.AddrPortFrom(s.v.addr, victimTCPPort)
	floodDone := make(chan int)
	go func() {
		r := mrand.New(mrand.NewPCG(1, 2))
		pkt := make([]byte, 40)
		floodDone <- pace(ctx, 5000, func(int) {
			synPacket(pkt, h.addr4(), dst, uint16(1024+r.IntN(60000)), r.Uint32())
			h.wg.SendPacket(pkt)
		})
	}()

	var connects, failed int
	var worst time.Duration
	halfOpen := 0
	for ctx.Err() == nil {
		start := time.Now()
		d := net.Dialer{Timeout: 3 * time.Second}
		c, err := d.DialContext(context.Background(), "tcp4", dst.String())
		if err == nil {
			worst = max(worst, time.Since(start))
			c.SetDeadline(time.Now().Add(5 * time.Second))
			err = tcpxfer.Push(c, 64<<10)
			c.Close()
		}
		if err != nil {
			failed++
			t.Errorf("the real peer's connection %d: %v", connects+failed, err)
		} else {
			connects++
		}
		if st, err := s.v.stats(false); err == nil {
			halfOpen = max(halfOpen, st.Node.TCPHalfOpen)
		}
		time.Sleep(100 * time.Millisecond)
	}
	syns := <-floodDone
	after, err := s.v.stats(false)
	if err != nil {
		t.Fatal(err)
	}
	cookies := after.Node.TCPSYNCookies - before.Node.TCPSYNCookies
	if halfOpen > maxHalfOpen {
		t.Errorf("%d half-open connections, want at most %d", halfOpen, maxHalfOpen)
	}
	if cookies == 0 {
		t.Errorf("no SYN cookies after %d SYNs", syns)
	}
	if connects == 0 {
		t.Error("the real peer made no connection")
	}
	return fmt.Sprintf("%d SYNs (%s) from random ports; the real peer's connections: %d done (connect ≤ %v), %d failed; at most %d half-open, %d SYN cookies",
		syns, perSecond(syns, attackTime), connects, worst.Round(time.Millisecond), failed, halfOpen, cookies)
}

// synPacket writes into b (40 bytes) an IPv4 packet with a TCP SYN from
// src:sport to dst.
func synPacket(b []byte, src netip.Addr, dst netip.AddrPort, sport uint16, seq uint32) {
	clear(b)
	t := b[20:]
	binary.BigEndian.PutUint16(t[0:], sport)
	binary.BigEndian.PutUint16(t[2:], dst.Port())
	binary.BigEndian.PutUint32(t[4:], seq)
	t[12], t[13] = 5<<4, byte(packet.TCPSyn)
	binary.BigEndian.PutUint16(t[14:], 64240)
	binary.BigEndian.PutUint16(t[16:], packet.TransportChecksum(src, dst.Addr(), packet.ProtoTCP, t))
	packet.PutIPv4Header(b, packet.ProtoTCP, src, dst.Addr(), uint16(seq), len(t))
}
