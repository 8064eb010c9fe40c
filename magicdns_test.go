package microlink

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/microlink-go/microlink/internal/dns"
	"github.com/microlink-go/microlink/internal/key"
	"github.com/microlink-go/microlink/internal/tailcfg"
)

func dnsTestNode(t *testing.T) *Node {
	n, _ := offlineNode(t)
	n.onMapResponse(&tailcfg.MapResponse{
		Node: &tailcfg.Node{ID: 1, Name: "me.tail1.ts.net.", Key: n.ident.NodeKey.NodePublic(),
			Addresses: []netip.Prefix{netip.MustParsePrefix("100.64.0.1/32")}, MachineAuthorized: true},
		Peers: []*tailcfg.Node{{ID: 2, Name: "laptop.tail1.ts.net.", Key: key.NewPrivate().NodePublic(), DiscoKey: key.NewPrivate().DiscoPublic(),
			Addresses: []netip.Prefix{netip.MustParsePrefix("100.64.0.2/32"), netip.MustParsePrefix("fd7a:115c:a1e0::2/128")}}},
		DNSConfig: &tailcfg.DNSConfig{
			Routes:       map[string][]*tailcfg.Resolver{"tail1.ts.net": nil},
			ExtraRecords: []tailcfg.DNSRecord{{Name: "db.tail1.ts.net", Value: "100.64.0.9"}},
		},
	})
	return n
}

func aQuery(t *testing.T, id uint16, name string) []byte {
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, RecursionDesired: true})
	b.StartQuestions()
	b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET})
	q, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func firstA(t *testing.T, resp []byte) (dnsmessage.RCode, string) {
	var m dnsmessage.Message
	if err := m.Unpack(resp); err != nil {
		t.Fatal(err)
	}
	if len(m.Answers) == 0 {
		return m.Header.RCode, ""
	}
	a := m.Answers[0].Body.(*dnsmessage.AResource).A
	return m.Header.RCode, netip.AddrFrom4(a).String()
}

// TestQuad100 queries the node's resolver at 100.100.100.100:53 and its
// IPv6 address through Dial, over UDP and TCP.
func TestQuad100(t *testing.T) {
	n := dnsTestNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, addr := range []string{"100.100.100.100:53", "[fd7a:115c:a1e0::53]:53"} {
		c, err := n.Dial(ctx, "udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 1500)
		for i, name := range []string{"laptop.", "db.tail1.ts.net.", "nope.tail1.ts.net."} {
			c.Write(aQuery(t, uint16(i), name))
			nr, err := c.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			rc, ip := firstA(t, buf[:nr])
			want := []string{"100.64.0.2", "100.64.0.9", ""}[i]
			if ip != want || (want == "" && rc != dnsmessage.RCodeNameError) {
				t.Errorf("%s %s over UDP: %v %q", addr, name, rc, ip)
			}
		}
		c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		c.Write([]byte("garbage"))
		if _, err := c.Read(buf); err == nil {
			t.Error("garbage query answered")
		}
		c.Close()

		tc, err := n.Dial(ctx, "tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		tc.SetDeadline(time.Now().Add(5 * time.Second))
		q := aQuery(t, 7, "laptop.tail1.ts.net.")
		tc.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(q))), q...))
		resp, err := dns.ReadTCPMessage(bufio.NewReader(tc))
		if err != nil {
			t.Fatal(err)
		}
		if _, ip := firstA(t, resp); ip != "100.64.0.2" {
			t.Errorf("%s over TCP: %q", addr, ip)
		}
		tc.Close()
	}
	addrs, err := n.LookupHost(ctx, "laptop")
	if err != nil || len(addrs) != 2 || addrs[0].String() != "100.64.0.2" {
		t.Errorf("LookupHost: %v %v", addrs, err)
	}
	if _, err := n.Dial(ctx, "tcp", "nope.tail1.ts.net:80"); err == nil {
		t.Error("dial of an unknown tailnet name succeeded")
	}
	if _, err := n.Dial(ctx, "unix", "x:1"); err == nil {
		t.Error("unix network accepted")
	}
	// An address no peer carries fails at once.
	start := time.Now()
	for _, network := range []string{"tcp", "udp"} {
		if _, err := n.Dial(ctx, network, "192.0.2.1:80"); !errors.Is(err, ErrNoRoute) || time.Since(start) > time.Second {
			t.Errorf("%s dial outside the tailnet: %v after %v", network, err, time.Since(start))
		}
	}
}

// TestQuad100ClosedWithNode: an open TCP connection to the resolver is
// ended by Close, and its goroutine stops.
func TestQuad100ClosedWithNode(t *testing.T) {
	n := dnsTestNode(t)
	before := runtime.NumGoroutine()
	c, err := n.Dial(context.Background(), "tcp", "100.100.100.100:53")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	done := make(chan struct{})
	go func() { n.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close hangs on an open resolver connection")
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if g := runtime.NumGoroutine(); g > before {
		t.Errorf("%d goroutines more after Close", g-before)
	}
}
