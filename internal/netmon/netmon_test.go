package netmon

import (
	"net/netip"
	"strings"
	"testing"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func TestStateEqualAndDiff(t *testing.T) {
	a := State{
		Interfaces: map[string][]netip.Prefix{
			"eth0":  {pfx("198.18.5.2/24")},
			"wlan0": {pfx("198.18.6.2/24"), pfx("2001:db8::2/64")},
		},
		DefaultRoutes: []Route{{Gateway: netip.MustParseAddr("198.18.5.1"), Interface: "eth0"}},
	}
	b := State{
		Interfaces: map[string][]netip.Prefix{
			"eth0":  {pfx("198.18.5.20/24")},
			"wlan0": {pfx("198.18.6.2/24"), pfx("2001:db8::2/64")},
			"eth1":  {pfx("198.18.7.2/24")},
		},
		DefaultRoutes: []Route{{Gateway: netip.MustParseAddr("198.18.7.1"), Interface: "eth1", Metric: 100}},
	}
	if !a.Equal(a) || a.Equal(b) || b.Equal(a) {
		t.Fatal("Equal is wrong")
	}
	if (State{}).Equal(State{Interfaces: map[string][]netip.Prefix{}}) != true {
		t.Fatal("a nil map and an empty one differ")
	}
	got := a.Diff(b)
	for _, want := range []string{
		"eth0 +198.18.5.20/24 -198.18.5.2/24",
		"eth1 +198.18.7.2/24",
		"default via 198.18.5.1 dev eth0] → [default via 198.18.7.1 dev eth1 metric 100",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("Diff = %q, want it to contain %q", got, want)
		}
	}
	if strings.Contains(got, "wlan0") {
		t.Errorf("Diff mentions the unchanged wlan0: %q", got)
	}
	if d := a.Diff(a); d != "none" {
		t.Errorf("Diff with itself = %q", d)
	}
}

func TestUsable(t *testing.T) {
	for s, want := range map[string]bool{
		"198.18.5.2":  true,
		"2001:db8::1": true,
		"100.64.0.1":  true, // a carrier-grade NAT uplink is an uplink
		"127.0.0.1":   false,
		"::1":         false,
		"fe80::1":     false,
		"169.254.1.1": false,
		"224.0.0.1":   false,
		"0.0.0.0":     false,
	} {
		if got := usable(netip.MustParseAddr(s)); got != want {
			t.Errorf("usable(%s) = %v, want %v", s, got, want)
		}
	}
}

func TestNewNeedsOnChange(t *testing.T) {
	if _, err := New(Options{}); err == nil {
		t.Fatal("New without OnChange succeeded")
	}
}
