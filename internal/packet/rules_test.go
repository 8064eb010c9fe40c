package packet

import (
	"fmt"
	"net/netip"
	"testing"
)

func TestParseSrc(t *testing.T) {
	tests := []struct {
		in   string
		want string // fmt of the prefixes, or "error"
	}{
		{"*", "[0.0.0.0/0 ::/0]"},
		{"100.64.0.1", "[100.64.0.1/32]"},
		{"fd7a:115c:a1e0::1", "[fd7a:115c:a1e0::1/128]"},
		{"100.64.0.0/10", "[100.64.0.0/10]"},
		{"fd7a:115c:a1e0::/48", "[fd7a:115c:a1e0::/48]"},
		{"100.64.0.1/10", "error"},
		{"10.0.0.0-10.0.0.255", "[10.0.0.0/24]"},
		{"10.0.0.1-10.0.0.1", "[10.0.0.1/32]"},
		{"10.0.0.1-10.0.0.6", "[10.0.0.1/32 10.0.0.2/31 10.0.0.4/31 10.0.0.6/32]"},
		{"10.0.0.255-10.0.1.0", "[10.0.0.255/32 10.0.1.0/32]"},
		{"0.0.0.0-255.255.255.255", "[0.0.0.0/0]"},
		{"255.255.255.254-255.255.255.255", "[255.255.255.254/31]"},
		{"::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "[::/0]"},
		{"2001:db8::-2001:db8::ffff:ffff:ffff:ffff", "[2001:db8::/64]"},
		{"2001:db8::1-2001:db8::3", "[2001:db8::1/128 2001:db8::2/127]"},
		{"2001:db8::ffff:ffff:ffff:ffff-2001:db8:0:1::", "[2001:db8::ffff:ffff:ffff:ffff/128 2001:db8:0:1::/128]"},
		{"10.0.0.9-10.0.0.1", "error"},
		{"10.0.0.1-::1", "error"},
		{"10.0.0.1-10.0.0.2-10.0.0.3", "error"},
		{"cap:funnel", "[]"},
		{"", "error"},
		{"fe80::1%eth0", "error"},
		{"host", "error"},
		{"100.64.0.0/33", "error"},
	}
	for _, tt := range tests {
		got, err := ParseSrc(tt.in)
		s := fmt.Sprint(got)
		if err != nil {
			s = "error"
		}
		if s != tt.want {
			t.Errorf("ParseSrc(%q) = %s (%v), want %s", tt.in, s, err, tt.want)
		}
	}
}

// TestRangePrefixesCover checks ranges against a brute-force walk of the
// addresses.
func TestRangePrefixesCover(t *testing.T) {
	base := netip.MustParseAddr("10.1.2.0")
	addr := func(i int) netip.Addr {
		a := base.As4()
		a[3] = byte(i)
		return netip.AddrFrom4(a)
	}
	for lo := 0; lo < 256; lo += 7 {
		for hi := lo; hi < 256; hi += 13 {
			ps, err := rangePrefixes(addr(lo), addr(hi))
			if err != nil {
				t.Fatal(err)
			}
			for i := range 256 {
				in := 0
				for _, p := range ps {
					if p.Contains(addr(i)) {
						in++
					}
				}
				want := 0
				if i >= lo && i <= hi {
					want = 1
				}
				if in != want {
					t.Fatalf("%d-%d: address %d in %d prefixes of %v", lo, hi, i, in, ps)
				}
			}
		}
	}
}

func TestParseRule(t *testing.T) {
	r, err := ParseRule(
		[]string{"100.64.0.1", "fd7a:115c:a1e0::/48", "cap:x"},
		[]Dst{{IP: "100.64.0.2", First: 22, Last: 22}, {IP: "*", First: 80, Last: 443}},
		nil)
	if err != nil {
		t.Fatal(err)
	}
	want := Rule{
		Srcs: []netip.Prefix{pfx("100.64.0.1/32"), pfx("fd7a:115c:a1e0::/48")},
		Dsts: []PortRange{
			{Net: pfx("100.64.0.2/32"), First: 22, Last: 22},
			{Net: pfx("0.0.0.0/0"), First: 80, Last: 443},
			{Net: pfx("::/0"), First: 80, Last: 443},
		},
	}
	if fmt.Sprint(r) != fmt.Sprint(want) {
		t.Errorf("got  %v\nwant %v", r, want)
	}

	// Bad entries are reported but the rest is kept.
	r, err = ParseRule([]string{"bogus", "100.64.0.1"}, []Dst{{IP: "cap:y"}, {IP: "nope"}, {IP: "100.64.0.2", First: 1, Last: 2}}, []int{6, 300, -1, 17})
	if err == nil {
		t.Error("no error for bad source")
	}
	if fmt.Sprint(r.Srcs) != "[100.64.0.1/32]" || len(r.Dsts) != 1 || fmt.Sprint(r.Protos) != "[TCP UDP]" {
		t.Errorf("partial rule %v", r)
	}

	// A rule naming only invalid protocols matches nothing.
	r, _ = ParseRule([]string{"*"}, []Dst{{IP: "*", Last: 65535}}, []int{256})
	f := NewFilter([]Rule{r}, []netip.Prefix{pfx("100.64.0.2/32")})
	if p := mustDecode(t, pkt(t, a4, b4, ProtoTCP, tcpHdr(1, 22, TCPSyn))); f.Inbound(p) != Drop {
		t.Error("rule with only invalid protocols matched")
	}

	// Explicit protocols replace the defaults.
	r, _ = ParseRule([]string{"*"}, []Dst{{IP: "*", Last: 65535}}, []int{17})
	f = NewFilter([]Rule{r}, []netip.Prefix{pfx("100.64.0.2/32")})
	if p := mustDecode(t, pkt(t, a4, b4, ProtoTCP, tcpHdr(1, 22, TCPSyn))); f.Inbound(p) != Drop {
		t.Error("UDP-only rule let TCP in")
	}
	if p := mustDecode(t, pkt(t, a4, b4, ProtoUDP, udpHdr(1, 22))); f.Inbound(p) != Accept {
		t.Error("UDP-only rule kept UDP out")
	}
}

func TestAddresses(t *testing.T) {
	tests := []struct {
		a    string
		want bool
	}{
		{"100.64.0.1", true},
		{"100.127.255.255", true},
		{"100.128.0.0", false},
		{"100.63.255.255", false},
		{"100.115.92.1", false},
		{"100.115.93.255", false},
		{"100.115.94.0", true},
		{"fd7a:115c:a1e0::1", true},
		{"fd7a:115c:a1e1::1", false},
		{"10.0.0.1", false},
	}
	for _, tt := range tests {
		if got := IsTailscaleIP(netip.MustParseAddr(tt.a)); got != tt.want {
			t.Errorf("IsTailscaleIP(%s) = %v", tt.a, got)
		}
	}
	if ServiceIPv4().String() != "100.100.100.100" || ServiceIPv6().String() != "fd7a:115c:a1e0::53" {
		t.Error("service IPs")
	}
	if !IsServiceIP(netip.MustParseAddr("100.100.100.100")) || IsServiceIP(a4) {
		t.Error("IsServiceIP")
	}
	if CGNATRange().String() != "100.64.0.0/10" || ULARange().String() != "fd7a:115c:a1e0::/48" || ChromeOSVMRange().String() != "100.115.92.0/23" {
		t.Error("ranges")
	}
	if ProtoTSMP != 99 {
		t.Error("TSMP protocol number")
	}
}
