package tunnel

import (
	"context"
	"errors"
	"io"
	"net/netip"
	"testing"
	"time"

	"github.com/microlink-go/microlink/internal/packet"
	"github.com/microlink-go/microlink/internal/tcp"
)

func TestTCPRoundTrip(t *testing.T) {
	a, b := pair(t)
	for _, dst := range []netip.Addr{addrB4.Addr(), addrB6.Addr()} {
		l, err := b.ListenTCP(80)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c, err := a.DialTCP(ctx, netip.AddrPortFrom(dst, 80))
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		sc, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("hello"))
		c.CloseWrite()
		got, err := io.ReadAll(sc)
		if err != nil || string(got) != "hello" {
			t.Fatalf("read %q %v", got, err)
		}
		if ra := sc.RemoteAddr().String(); ra != c.LocalAddr().String() {
			t.Fatalf("server sees %v, client is %v", ra, c.LocalAddr())
		}
		sc.Close()
		c.Close()
		l.Close()
	}
	if st := a.TCPStats(); st.SegmentsOut == 0 || st.SegmentsIn == 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestTCPFilter(t *testing.T) {
	a, b := pair(t)
	rule, err := packet.ParseRule([]string{"*"}, []packet.Dst{{IP: "*", First: 22, Last: 22}}, []int{int(packet.ProtoTCP)})
	if err != nil {
		t.Fatal(err)
	}
	b.SetFilter(packet.NewFilter([]packet.Rule{rule}, []netip.Prefix{addrB4, addrB6}))
	for _, port := range []uint16{22, 23} {
		l, _ := b.ListenTCP(port)
		defer l.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c, err := a.DialTCP(ctx, netip.AddrPortFrom(addrB4.Addr(), 22))
	if err != nil {
		t.Fatalf("allowed port: %v", err)
	}
	c.Close()

	// The filter drops the SYN to port 23: no connection, no reset.
	resets := b.TCPStats().ResetsSent
	ctx2, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	if _, err := a.DialTCP(ctx2, netip.AddrPortFrom(addrB4.Addr(), 23)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("filtered port: %v", err)
	}
	if b.TCPStats().ResetsSent != resets {
		t.Fatal("reset sent for a filtered SYN")
	}

	// An allowed port nobody listens on is refused.
	rule2, _ := packet.ParseRule([]string{"*"}, []packet.Dst{{IP: "*", First: 24, Last: 24}}, nil)
	b.SetFilter(packet.NewFilter([]packet.Rule{rule, rule2}, []netip.Prefix{addrB4, addrB6}))
	if _, err := a.DialTCP(ctx, netip.AddrPortFrom(addrB4.Addr(), 24)); !errors.Is(err, tcp.ErrRefused) {
		t.Fatalf("closed port: %v", err)
	}
}

func TestTCPClosedWithStack(t *testing.T) {
	a, b := pair(t)
	l, _ := b.ListenTCP(80)
	c, err := a.DialTCP(context.Background(), netip.AddrPortFrom(addrB4.Addr(), 80))
	if err != nil {
		t.Fatal(err)
	}
	sc, _ := l.Accept()
	a.Close()
	if _, err := sc.Read(make([]byte, 1)); !errors.Is(err, tcp.ErrReset) {
		t.Fatalf("peer read after stack close: %v", err)
	}
	if _, err := c.Write([]byte("x")); err == nil {
		t.Fatal("write on a closed stack succeeded")
	}
}
