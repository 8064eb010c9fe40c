package microlink

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/microlink-go/microlink/internal/dns"
	"github.com/microlink-go/microlink/internal/packet"
	"github.com/microlink-go/microlink/internal/tailcfg"
	"github.com/microlink-go/microlink/internal/tcp"
)

// hostWire stands for the TUN device between the host and a
// hostResolver: packets the host sends go to the resolver, and what the
// resolver writes comes back as TCP segments for the host's TCP or as
// other packets on a channel. Both directions are queued, as on the
// device, so that neither side is called back from its own output.
type hostWire struct {
	h       *hostResolver
	host    *tcp.Stack
	toNode  chan []byte
	toHost  chan []byte
	packets chan []byte // what reaches the host other than TCP
	done    chan struct{}
}

func newHostWire(t *testing.T, r *dns.Resolver) *hostWire {
	w := &hostWire{toNode: make(chan []byte, 256), toHost: make(chan []byte, 256), packets: make(chan []byte, 16), done: make(chan struct{})}
	w.h = newHostResolver(r, 1280, func(pkt []byte) { w.toHost <- append([]byte(nil), pkt...) }, quietLogger())
	w.host = tcp.New(tcp.Config{Output: func(pkt []byte) error { w.toNode <- append([]byte(nil), pkt...); return nil }, Logger: quietLogger()})
	go func() {
		for {
			select {
			case pkt := <-w.toNode:
				w.h.handle(pkt)
			case pkt := <-w.toHost:
				var p packet.Parsed
				if p.Decode(pkt) != nil {
					t.Errorf("the resolver wrote a malformed packet %x", pkt)
					continue
				}
				if p.Proto == packet.ProtoTCP {
					w.host.Inbound(p.Src, p.Dst, p.Transport())
				} else {
					w.packets <- pkt
				}
			case <-w.done:
				return
			}
		}
	}()
	t.Cleanup(func() {
		w.host.Close()
		w.h.close()
		close(w.done)
	})
	return w
}

// next returns the next non-TCP packet the host gets.
func (w *hostWire) next(t *testing.T) *packet.Parsed {
	t.Helper()
	select {
	case pkt := <-w.packets:
		var p packet.Parsed
		if err := p.Decode(pkt); err != nil || !p.ChecksumsValid() {
			t.Fatalf("packet to the host: %v, checksums valid %v", err, p.ChecksumsValid())
		}
		return &p
	case <-time.After(5 * time.Second):
		t.Fatal("no packet for the host")
		return nil
	}
}

// TestHostResolver: the host's queries to the resolver's addresses, as
// they come out of the TUN device, are answered over UDP and TCP, from
// the address they were sent to; echo requests too; other TCP ports
// refuse.
func TestHostResolver(t *testing.T) {
	n := dnsTestNode(t)
	w := newHostWire(t, n.dns)
	host4, host6 := netip.MustParseAddr("100.64.0.1"), netip.MustParseAddr("fd7a:115c:a1e0::1")
	for _, tc := range []struct {
		client, server netip.Addr
	}{{host4, dns.IPv4}, {host6, dns.IPv6}} {
		client := netip.AddrPortFrom(tc.client, 40000)
		server := netip.AddrPortFrom(tc.server, 53)
		for i, name := range []string{"laptop.tail1.ts.net.", "db.tail1.ts.net."} {
			b := make([]byte, 1280)
			nb, err := packet.BuildUDP(b, client, server, aQuery(t, uint16(i+1), name))
			if err != nil {
				t.Fatal(err)
			}
			w.toNode <- b[:nb]
			p := w.next(t)
			if p.Proto != packet.ProtoUDP || p.SrcAddrPort() != server || p.DstAddrPort() != client {
				t.Fatalf("answer %v -> %v proto %v", p.SrcAddrPort(), p.DstAddrPort(), p.Proto)
			}
			want := map[string]string{"laptop.tail1.ts.net.": "100.64.0.2", "db.tail1.ts.net.": "100.64.0.9"}[name]
			if rcode, a := firstA(t, p.Payload()); rcode != 0 || a != want {
				t.Errorf("UDP %s via %v: %v %q, want %s", name, tc.server, rcode, a, want)
			}
		}

		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := w.host.Dial(ctx, tc.client, server)
		cancel()
		if err != nil {
			t.Fatalf("TCP to %v: %v", server, err)
		}
		br := bufio.NewReader(c)
		for i, name := range []string{"laptop.", "missing.tail1.ts.net."} {
			q := aQuery(t, uint16(10+i), name)
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(q))), q...)); err != nil {
				t.Fatal(err)
			}
			resp, err := dns.ReadTCPMessage(br)
			if err != nil {
				t.Fatalf("TCP answer for %s: %v", name, err)
			}
			rcode, a := firstA(t, resp)
			if (i == 0 && (rcode != 0 || a != "100.64.0.2")) || (i == 1 && rcode != 3) {
				t.Errorf("TCP %s: %v %q", name, rcode, a)
			}
		}
		c.Close()

		ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
		_, err = w.host.Dial(ctx, tc.client, netip.AddrPortFrom(tc.server, 80))
		cancel()
		if !errors.Is(err, tcp.ErrRefused) {
			t.Errorf("TCP to port 80 of %v: %v, want refused", tc.server, err)
		}

		b := make([]byte, 1280)
		nb, err := packet.BuildEchoRequest(b, tc.client, tc.server, 7, 1, []byte("ping"))
		if err != nil {
			t.Fatal(err)
		}
		w.toNode <- b[:nb]
		if p := w.next(t); !p.IsEchoReply() || p.Src != tc.server || p.Dst != tc.client || string(p.Payload()) != "ping" {
			t.Errorf("echo reply from %v: %+v", tc.server, p)
		}
	}
}

// TestForResolver: the check on every packet from the host looks at the
// destination only, and allocates nothing.
func TestForResolver(t *testing.T) {
	b := make([]byte, 1280)
	build := func(src, dst string) []byte {
		n, err := packet.BuildUDP(b, netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst), []byte("x"))
		if err != nil {
			t.Fatal(err)
		}
		return append([]byte(nil), b[:n]...)
	}
	for _, tc := range []struct {
		pkt  []byte
		want bool
	}{
		{build("100.64.0.1:1", "100.100.100.100:53"), true},
		{build("100.64.0.1:1", "100.100.100.100:5353"), true},
		{build("[fd7a:115c:a1e0::1]:1", "[fd7a:115c:a1e0::53]:53"), true},
		{build("100.100.100.100:53", "100.64.0.1:1"), false},
		{build("100.64.0.1:1", "100.64.0.2:53"), false},
		{build("[fd7a:115c:a1e0::1]:1", "[fd7a:115c:a1e0::54]:53"), false},
		{[]byte{0x45, 0, 0}, false},
		{nil, false},
	} {
		if got := forResolver(tc.pkt); got != tc.want {
			t.Errorf("forResolver(%x) = %v", tc.pkt, got)
		}
	}
	pkt := build("100.64.0.1:1", "100.64.0.2:53")
	if a := testing.AllocsPerRun(100, func() { forResolver(pkt) }); a != 0 {
		t.Errorf("%v allocations per packet", a)
	}
}

// TestHostDNSConfig: with AcceptDNS the host asks 100.100.100.100 with the
// tailnet's search domains, and where it routes by name, for the
// tailnet's names, reverse zones, split-DNS suffixes and extra records;
// for every name only when control names default resolvers.
func TestHostDNSConfig(t *testing.T) {
	dc := &tailcfg.DNSConfig{
		Domains:      []string{"corp.example", "tail1.ts.net."},
		Routes:       map[string][]*tailcfg.Resolver{"lab.example": {{Addr: "100.64.0.5"}}, "tail1.ts.net": nil},
		ExtraRecords: []tailcfg.DNSRecord{{Name: "printer.office.example", Value: "100.64.0.9"}},
	}
	cfg, _ := dns.ConfigFromNetmap(nil, "me.tail1.ts.net.", dc)
	c := hostDNSConfig(cfg, "me.tail1.ts.net.", dc)
	if !slices.Equal(c.Nameservers, []netip.Addr{dns.IPv4}) {
		t.Errorf("nameservers %v", c.Nameservers)
	}
	if !slices.Equal(c.Search, []string{"tail1.ts.net", "corp.example"}) {
		t.Errorf("search %q", c.Search)
	}
	for _, want := range []string{"tail1.ts.net", "lab.example", "printer.office.example", "64.100.in-addr.arpa", "127.100.in-addr.arpa", "0.e.1.a.c.5.1.1.a.7.d.f.ip6.arpa"} {
		if !slices.Contains(c.Match, want) {
			t.Errorf("match lacks %q: %q", want, c.Match)
		}
	}
	if slices.Contains(c.Match, "128.100.in-addr.arpa") || slices.Contains(c.Match, ".") {
		t.Errorf("match %q", c.Match)
	}
	dc.Resolvers = []*tailcfg.Resolver{{Addr: "198.18.0.53"}}
	cfg, _ = dns.ConfigFromNetmap(nil, "me.tail1.ts.net.", dc)
	if c := hostDNSConfig(cfg, "me.tail1.ts.net.", dc); c.Match[len(c.Match)-1] != "." {
		t.Errorf("with default resolvers, match %q", c.Match)
	}
}
