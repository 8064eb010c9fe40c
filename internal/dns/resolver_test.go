package dns

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/microlink-go/microlink/internal/tailcfg"
)

// names is a tailnet of three nodes.
type names map[string][]netip.Addr

func (n names) LookupName(name string) ([]netip.Addr, bool) {
	if !strings.Contains(name, ".") {
		name += ".tail1.ts.net"
	}
	a, ok := n[name]
	return a, ok
}

func (n names) LookupAddr(a netip.Addr) (string, bool) {
	for name, addrs := range n {
		if slices.Contains(addrs, a) {
			return name + ".", true
		}
	}
	return "", false
}

var tailnet = names{
	"laptop.tail1.ts.net": {netip.MustParseAddr("100.64.0.2"), netip.MustParseAddr("fd7a:115c:a1e0::2")},
	"v4only.tail1.ts.net": {netip.MustParseAddr("100.64.0.3")},
	"shared.other.ts.net": {netip.MustParseAddr("100.64.0.4")},
}

// makeQuery builds a query; edns > 0 adds an OPT record with that size.
func makeQuery(t testing.TB, id uint16, name string, typ dnsmessage.Type, edns int) []byte {
	t.Helper()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, RecursionDesired: true})
	b.StartQuestions()
	if err := b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: typ, Class: dnsmessage.ClassINET}); err != nil {
		t.Fatal(err)
	}
	if edns > 0 {
		b.StartAdditionals()
		var rh dnsmessage.ResourceHeader
		rh.SetEDNS0(edns, 0, false)
		b.OPTResource(rh, dnsmessage.OPTResource{})
	}
	q, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return q
}

type answer struct {
	hdr   dnsmessage.Header
	addrs []netip.Addr
	ptrs  []string
	opt   *dnsmessage.ResourceHeader
}

func parseAnswer(t testing.TB, b []byte) answer {
	t.Helper()
	var m dnsmessage.Message
	if err := m.Unpack(b); err != nil {
		t.Fatalf("unpack answer: %v", err)
	}
	a := answer{hdr: m.Header}
	for _, r := range m.Answers {
		switch body := r.Body.(type) {
		case *dnsmessage.AResource:
			a.addrs = append(a.addrs, netip.AddrFrom4(body.A))
		case *dnsmessage.AAAAResource:
			a.addrs = append(a.addrs, netip.AddrFrom16(body.AAAA))
		case *dnsmessage.PTRResource:
			a.ptrs = append(a.ptrs, body.PTR.String())
		}
	}
	for i := range m.Additionals {
		if m.Additionals[i].Header.Type == dnsmessage.TypeOPT {
			a.opt = &m.Additionals[i].Header
		}
	}
	return a
}

func newTestResolver(t testing.TB, cfg Config) *Resolver {
	r := New(Options{HostResolvers: func() []netip.AddrPort { return nil }})
	r.SetConfig(cfg)
	return r
}

func baseConfig() Config {
	c, _ := ConfigFromNetmap(tailnet, "me.tail1.ts.net.", &tailcfg.DNSConfig{
		Routes: map[string][]*tailcfg.Resolver{"tail1.ts.net": nil},
		ExtraRecords: []tailcfg.DNSRecord{
			{Name: "db.tail1.ts.net", Value: "100.64.0.9"},
			{Name: "Web.Example.COM.", Type: "AAAA", Value: "fd7a:115c:a1e0::9"},
			{Name: "bad.example.com", Type: "A", Value: "fd7a:115c:a1e0::9"},
			{Name: "cname.example.com", Type: "CNAME", Value: "x"},
		},
	})
	return c
}

func TestLocalAnswers(t *testing.T) {
	r := newTestResolver(t, baseConfig())
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		typ   dnsmessage.Type
		rcode dnsmessage.RCode
		want  []string
	}{
		{"laptop.tail1.ts.net.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, []string{"100.64.0.2"}},
		{"LAPTOP.Tail1.ts.net.", dnsmessage.TypeAAAA, dnsmessage.RCodeSuccess, []string{"fd7a:115c:a1e0::2"}},
		{"laptop.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, []string{"100.64.0.2"}},
		{"laptop.", dnsmessage.TypeALL, dnsmessage.RCodeSuccess, []string{"100.64.0.2", "fd7a:115c:a1e0::2"}},
		{"v4only.tail1.ts.net.", dnsmessage.TypeAAAA, dnsmessage.RCodeSuccess, nil}, // NODATA
		{"v4only.tail1.ts.net.", dnsmessage.TypeMX, dnsmessage.RCodeSuccess, nil},
		{"shared.other.ts.net.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, []string{"100.64.0.4"}},
		{"nope.tail1.ts.net.", dnsmessage.TypeA, dnsmessage.RCodeNameError, nil},
		{"a.b.tail1.ts.net.", dnsmessage.TypeA, dnsmessage.RCodeNameError, nil},
		{"db.tail1.ts.net.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, []string{"100.64.0.9"}},
		{"web.example.com.", dnsmessage.TypeAAAA, dnsmessage.RCodeSuccess, []string{"fd7a:115c:a1e0::9"}},
		{"2.0.64.100.in-addr.arpa.", dnsmessage.TypePTR, dnsmessage.RCodeSuccess, []string{"laptop.tail1.ts.net."}},
		{"2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.e.1.a.c.5.1.1.a.7.d.f.ip6.arpa.", dnsmessage.TypePTR, dnsmessage.RCodeSuccess, []string{"laptop.tail1.ts.net."}},
		{"99.0.64.100.in-addr.arpa.", dnsmessage.TypePTR, dnsmessage.RCodeNameError, nil},
	} {
		resp := r.Respond(ctx, makeQuery(t, 77, tc.name, tc.typ, 0), false)
		if resp == nil {
			t.Errorf("%s %v: no answer", tc.name, tc.typ)
			continue
		}
		a := parseAnswer(t, resp)
		var got []string
		for _, x := range a.addrs {
			got = append(got, x.String())
		}
		got = append(got, a.ptrs...)
		if a.hdr.ID != 77 || !a.hdr.Response || a.hdr.RCode != tc.rcode || !slices.Equal(got, tc.want) || !a.hdr.Authoritative {
			t.Errorf("%s %v: %+v %q, want %v %q", tc.name, tc.typ, a.hdr, got, tc.rcode, tc.want)
		}
	}
	// Names nobody routes go to the host's resolvers; here there are none.
	a := parseAnswer(t, r.Respond(ctx, makeQuery(t, 1, "bad.example.com.", dnsmessage.TypeA, 0), false))
	if a.hdr.RCode != dnsmessage.RCodeServerFailure {
		t.Errorf("unroutable name: %v", a.hdr.RCode)
	}
}

// upstream is a DNS server on loopback (UDP and TCP) answering A queries
// with a fixed address, or with n records to make a big answer.
type upstream struct {
	addr    netip.AddrPort
	queries atomic.Int64
	tcp     atomic.Int64
}

func startUpstream(t *testing.T, answerIP string, records int) *upstream {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", itoa(port)))
	if err != nil {
		pc.Close()
		t.Skipf("TCP port %d busy: %v", port, err)
	}
	u := &upstream{addr: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))}
	t.Cleanup(func() { pc.Close(); ln.Close() })
	answer := func(q []byte, tcp bool) []byte {
		u.queries.Add(1)
		var m dnsmessage.Message
		if m.Unpack(q) != nil || len(m.Questions) != 1 {
			return nil
		}
		m.Header.Response = true
		m.Header.RecursionAvailable = true
		m.Additionals = nil
		if m.Questions[0].Name.String() == "missing.example.net." {
			m.Header.RCode = dnsmessage.RCodeNameError
		} else if m.Questions[0].Type == dnsmessage.TypeA {
			ip := netip.MustParseAddr(answerIP).As4()
			for i := 0; i < records; i++ {
				ip[3] = byte(i)
				m.Answers = append(m.Answers, dnsmessage.Resource{
					Header: dnsmessage.ResourceHeader{Name: m.Questions[0].Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 60},
					Body:   &dnsmessage.AResource{A: ip}})
			}
		}
		b, _ := m.Pack()
		if !tcp && len(b) > 512 {
			m.Answers = nil
			m.Header.Truncated = true
			b, _ = m.Pack()
		}
		return b
	}
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if b := answer(buf[:n], false); b != nil {
				pc.WriteTo(b, from)
			}
		}
	}()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.tcp.Add(1)
			go func() {
				defer c.Close()
				var lb [2]byte
				for {
					if _, err := readFull(c, lb[:]); err != nil {
						return
					}
					q := make([]byte, binary.BigEndian.Uint16(lb[:]))
					if _, err := readFull(c, q); err != nil {
						return
					}
					b := answer(q, true)
					out := binary.BigEndian.AppendUint16(nil, uint16(len(b)))
					c.Write(append(out, b...))
				}
			}()
		}
	}()
	return u
}

func TestForwarding(t *testing.T) {
	def := startUpstream(t, "192.0.2.1", 1)
	split := startUpstream(t, "192.0.2.2", 1)
	host := startUpstream(t, "192.0.2.3", 1)
	cfg := baseConfig()
	cfg.Upstream = []netip.AddrPort{netip.MustParseAddrPort("100.100.100.100:53"), def.addr}
	cfg.Routes = map[string][]netip.AddrPort{"corp.example.": {split.addr}, "x.corp.example.": {def.addr}}
	cfg.Local = append(cfg.Local, "internal.corp.example.")
	r := New(Options{HostResolvers: func() []netip.AddrPort { return []netip.AddrPort{host.addr} }})
	r.SetConfig(cfg)
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		want  string
		rcode dnsmessage.RCode
	}{
		{"www.example.org.", "192.0.2.0", 0},
		{"git.corp.example.", "192.0.2.0", 0},
		{"corp.example.", "192.0.2.0", 0},
		{"a.x.corp.example.", "192.0.2.0", 0},
		{"a.internal.corp.example.", "", dnsmessage.RCodeNameError},
		{"missing.example.net.", "", dnsmessage.RCodeNameError},
	} {
		for _, tcp := range []bool{false, true} {
			a := parseAnswer(t, r.Respond(ctx, makeQuery(t, 9, tc.name, dnsmessage.TypeA, 0), tcp))
			got := ""
			if len(a.addrs) == 1 {
				got = a.addrs[0].String()
			}
			if a.hdr.RCode != tc.rcode || got != tc.want || a.hdr.ID != 9 {
				t.Errorf("%s tcp=%v: %v %q", tc.name, tcp, a.hdr.RCode, got)
			}
		}
	}
	if def.queries.Load() != 6 || split.queries.Load() != 4 || host.queries.Load() != 0 {
		t.Errorf("queries: default %d, split %d, host %d", def.queries.Load(), split.queries.Load(), host.queries.Load())
	}
	// Without upstreams from control, the host's resolvers answer.
	cfg.Upstream = nil
	r.SetConfig(cfg)
	a := parseAnswer(t, r.Respond(ctx, makeQuery(t, 9, "www.example.org.", dnsmessage.TypeA, 0), false))
	if len(a.addrs) != 1 || a.addrs[0].String() != "192.0.2.0" || host.queries.Load() != 1 {
		t.Errorf("host resolver: %+v, %d queries", a, host.queries.Load())
	}
	// The servers the host named before it was pointed at the resolver
	// stand in for its own, until they are taken back.
	before := startUpstream(t, "192.0.2.4", 1)
	r.SetHostResolvers([]netip.AddrPort{before.addr})
	a = parseAnswer(t, r.Respond(ctx, makeQuery(t, 9, "www.example.org.", dnsmessage.TypeA, 0), false))
	if len(a.addrs) != 1 || before.queries.Load() != 1 || host.queries.Load() != 1 {
		t.Errorf("resolvers set for the host: %+v, %d and %d queries", a, before.queries.Load(), host.queries.Load())
	}
	r.SetHostResolvers(nil)
	a = parseAnswer(t, r.Respond(ctx, makeQuery(t, 9, "www.example.org.", dnsmessage.TypeA, 0), false))
	if len(a.addrs) != 1 || before.queries.Load() != 1 || host.queries.Load() != 2 {
		t.Errorf("host resolvers again: %+v, %d queries", a, host.queries.Load())
	}
	// A dead upstream: SERVFAIL, after trying the next one.
	dead, _ := net.ListenPacket("udp", "127.0.0.1:0")
	deadAddr := netip.MustParseAddrPort(dead.LocalAddr().String())
	dead.Close()
	cfg.Upstream = []netip.AddrPort{deadAddr}
	r.SetConfig(cfg)
	start := time.Now()
	a = parseAnswer(t, r.Respond(ctx, makeQuery(t, 9, "www.example.org.", dnsmessage.TypeA, 0), false))
	if a.hdr.RCode != dnsmessage.RCodeServerFailure || time.Since(start) > 2*queryTimeout {
		t.Errorf("dead upstream: %v after %v", a.hdr.RCode, time.Since(start))
	}
}

// TestTruncation: an answer too big for UDP has TC set and no records; the
// same query over TCP gets all of them. EDNS raises the UDP limit.
func TestTruncation(t *testing.T) {
	big := startUpstream(t, "192.0.2.0", 60) // 60 A records: about 1 KB
	cfg := baseConfig()
	cfg.Upstream = []netip.AddrPort{big.addr}
	cfg.Extra = map[string][]netip.Addr{}
	for i := 0; i < 60; i++ {
		cfg.Extra["many.tail1.ts.net."] = append(cfg.Extra["many.tail1.ts.net."], netip.AddrFrom4([4]byte{100, 64, 1, byte(i)}))
	}
	r := newTestResolver(t, cfg)
	ctx := context.Background()
	for _, name := range []string{"many.tail1.ts.net.", "big.example.org."} {
		resp := r.Respond(ctx, makeQuery(t, 5, name, dnsmessage.TypeA, 0), false)
		a := parseAnswer(t, resp)
		if !a.hdr.Truncated || len(a.addrs) != 0 || len(resp) > 512 {
			t.Errorf("%s over UDP: %d bytes, TC %v, %d records", name, len(resp), a.hdr.Truncated, len(a.addrs))
		}
		resp = r.Respond(ctx, makeQuery(t, 5, name, dnsmessage.TypeA, 0), true)
		a = parseAnswer(t, resp)
		if a.hdr.Truncated || len(a.addrs) != 60 {
			t.Errorf("%s over TCP: TC %v, %d records", name, a.hdr.Truncated, len(a.addrs))
		}
	}
	// With EDNS and a 4096-byte buffer, 60 local records (about 1 KB) fit
	// in the 1232 bytes the resolver sends over UDP.
	resp := r.Respond(ctx, makeQuery(t, 5, "many.tail1.ts.net.", dnsmessage.TypeA, 4096), false)
	a := parseAnswer(t, resp)
	if a.hdr.Truncated || len(a.addrs) != 60 || len(resp) > maxUDPSize || a.opt == nil || a.opt.Class != maxUDPSize {
		t.Errorf("EDNS: %d bytes, TC %v, %d records, OPT %+v", len(resp), a.hdr.Truncated, len(a.addrs), a.opt)
	}
}

func TestEDNS(t *testing.T) {
	r := newTestResolver(t, baseConfig())
	ctx := context.Background()
	a := parseAnswer(t, r.Respond(ctx, makeQuery(t, 1, "laptop.", dnsmessage.TypeA, 1232), false))
	if a.opt == nil || a.hdr.RCode != 0 {
		t.Fatalf("no OPT in the answer to an EDNS query: %+v", a)
	}
	if a2 := parseAnswer(t, r.Respond(ctx, makeQuery(t, 1, "laptop.", dnsmessage.TypeA, 0), false)); a2.opt != nil {
		t.Fatal("OPT in the answer to a plain query")
	}
	// EDNS version 1: BADVERS.
	q := makeQuery(t, 1, "laptop.", dnsmessage.TypeA, 1232)
	q[len(q)-11+6] = 1 // the OPT record's TTL: extended rcode, version (this byte), flags
	var m dnsmessage.Message
	if err := m.Unpack(r.Respond(ctx, q, false)); err != nil {
		t.Fatal(err)
	}
	if len(m.Answers) != 0 || len(m.Additionals) != 1 || m.Additionals[0].Header.ExtendedRCode(m.Header.RCode) != rcodeBadVers {
		t.Fatalf("EDNS version 1: %+v", m)
	}
}

func TestMalformed(t *testing.T) {
	r := newTestResolver(t, baseConfig())
	ctx := context.Background()
	good := makeQuery(t, 3, "laptop.", dnsmessage.TypeA, 0)
	two := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 3})
	two.StartQuestions()
	two.Question(dnsmessage.Question{Name: dnsmessage.MustNewName("a."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET})
	two.Question(dnsmessage.Question{Name: dnsmessage.MustNewName("b."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET})
	twoQ, _ := two.Finish()
	resp := slices.Clone(good)
	resp[2] |= 0x80
	notify := slices.Clone(good)
	notify[2] |= 4 << 3
	for _, tc := range []struct {
		name  string
		msg   []byte
		drop  bool
		rcode dnsmessage.RCode
	}{
		{"empty", nil, true, 0},
		{"short header", good[:11], true, 0},
		{"a response", resp, true, 0},
		{"no question", good[:12], false, dnsmessage.RCodeFormatError},
		{"cut question", good[:len(good)-2], false, dnsmessage.RCodeFormatError},
		{"two questions", twoQ, false, dnsmessage.RCodeFormatError},
		{"opcode NOTIFY", notify, false, dnsmessage.RCodeNotImplemented},
		{"trailing garbage", append(slices.Clone(good), 1, 2, 3), false, dnsmessage.RCodeSuccess},
	} {
		b := r.Respond(ctx, tc.msg, false)
		if tc.drop {
			if b != nil {
				t.Errorf("%s: answered", tc.name)
			}
			continue
		}
		if b == nil {
			t.Errorf("%s: dropped", tc.name)
			continue
		}
		var p dnsmessage.Parser
		h, err := p.Start(b)
		if err != nil || h.RCode != tc.rcode || h.ID != 3 {
			t.Errorf("%s: %+v %v", tc.name, h, err)
		}
	}
}

func TestServeTCP(t *testing.T) {
	r := newTestResolver(t, baseConfig())
	a, b := net.Pipe()
	done := make(chan struct{})
	go func() { r.ServeTCP(context.Background(), b); close(done) }()
	// Two queries in one write; two answers in order.
	var msg []byte
	for i, name := range []string{"laptop.", "v4only."} {
		q := makeQuery(t, uint16(10+i), name, dnsmessage.TypeA, 0)
		msg = binary.BigEndian.AppendUint16(msg, uint16(len(q)))
		msg = append(msg, q...)
	}
	go a.Write(msg)
	br := newReader(a)
	for i, want := range []string{"100.64.0.2", "100.64.0.3"} {
		resp, err := ReadTCPMessage(br)
		if err != nil {
			t.Fatal(err)
		}
		ans := parseAnswer(t, resp)
		if ans.hdr.ID != uint16(10+i) || len(ans.addrs) != 1 || ans.addrs[0].String() != want {
			t.Errorf("answer %d: %+v", i, ans)
		}
	}
	// A length prefix shorter than a header ends the connection.
	a.Write([]byte{0, 3, 1, 2, 3})
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("ServeTCP did not return after garbage")
	}
	a.Close()
}

func TestLookupHost(t *testing.T) {
	up := startUpstream(t, "192.0.2.7", 1)
	cfg := baseConfig()
	cfg.Upstream = []netip.AddrPort{up.addr}
	r := newTestResolver(t, cfg)
	ctx := context.Background()
	for _, tc := range []struct {
		host string
		want string
	}{
		{"laptop", "[100.64.0.2 fd7a:115c:a1e0::2]"},
		{"Laptop.tail1.ts.net.", "[100.64.0.2 fd7a:115c:a1e0::2]"},
		{"db.tail1.ts.net", "[100.64.0.9]"},
		{"www.example.org", "[192.0.2.0]"},
		{"100.64.0.3", "[100.64.0.3]"},
		{"::ffff:1.2.3.4", "[1.2.3.4]"},
	} {
		got, err := r.LookupHost(ctx, tc.host)
		if err != nil || fmtAddrs(got) != tc.want {
			t.Errorf("%s: %v %v", tc.host, got, err)
		}
	}
	for _, bad := range []string{"nope.tail1.ts.net", "missing.example.net", "", strings.Repeat("a.", 130)} {
		if got, err := r.LookupHost(ctx, bad); err == nil {
			t.Errorf("%q: %v", bad, got)
		}
	}
}

func TestParseResolvConf(t *testing.T) {
	got := ParseResolvConf([]byte("# x\nnameserver 192.0.2.53\nnameserver 100.100.100.100\nsearch foo\nnameserver fd00::1\nnameserver bogus\n"))
	if fmtAddrs2(got) != "[192.0.2.53:53 [fd00::1]:53]" {
		t.Fatalf("got %v", got)
	}
}

func TestConfigFromNetmap(t *testing.T) {
	c, skipped := ConfigFromNetmap(tailnet, "me.Tail1.ts.net.", &tailcfg.DNSConfig{
		Resolvers: []*tailcfg.Resolver{{Addr: "192.0.2.53"}, {Addr: "https://dns.example/dns-query"}, {Addr: "[2001:db8::1]:5353"}, nil},
		Routes: map[string][]*tailcfg.Resolver{
			"corp.example":                     {{Addr: "100.64.0.5"}},
			"0.e.1.a.c.5.1.1.a.7.d.f.ip6.arpa": nil,
		},
	})
	if fmtAddrs2(c.Upstream) != "[192.0.2.53:53 [2001:db8::1]:5353]" || !slices.Equal(skipped, []string{"https://dns.example/dns-query"}) {
		t.Errorf("upstream %v, skipped %q", c.Upstream, skipped)
	}
	if !slices.Contains(c.Local, "tail1.ts.net.") || !slices.Contains(c.Local, "0.e.1.a.c.5.1.1.a.7.d.f.ip6.arpa.") || fmtAddrs2(c.Routes["corp.example."]) != "[100.64.0.5:53]" {
		t.Errorf("local %q routes %v", c.Local, c.Routes)
	}
}
