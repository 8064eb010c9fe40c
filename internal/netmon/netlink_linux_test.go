package netmon

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// nlMsg builds one netlink message of type typ with body.
func nlMsg(typ uint16, body []byte) []byte {
	b := make([]byte, unix.SizeofNlMsghdr, unix.SizeofNlMsghdr+len(body))
	binary.NativeEndian.PutUint32(b, uint32(unix.SizeofNlMsghdr+len(body)))
	binary.NativeEndian.PutUint16(b[4:], typ)
	b = append(b, body...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// rtAttr encodes one route attribute, padded.
func rtAttr(typ uint16, val []byte) []byte {
	b := make([]byte, 4, 4+len(val)+3)
	binary.NativeEndian.PutUint16(b, uint16(4+len(val)))
	binary.NativeEndian.PutUint16(b[2:], typ)
	b = append(b, val...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func u32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }

// routeBody is a struct rtmsg followed by attributes.
func routeBody(dstLen, table, typ uint8, attrs ...[]byte) []byte {
	b := []byte{unix.AF_INET, dstLen, 0, 0, table, unix.RTPROT_BOOT, unix.RT_SCOPE_UNIVERSE, typ, 0, 0, 0, 0}
	for _, a := range attrs {
		b = append(b, a...)
	}
	return b
}

func TestRelevant(t *testing.T) {
	gw := netip.MustParseAddr("198.18.5.1").AsSlice()
	for _, tc := range []struct {
		name string
		msg  []byte
		want bool
	}{
		{"new address", nlMsg(unix.RTM_NEWADDR, make([]byte, unix.SizeofIfAddrmsg)), true},
		{"deleted address", nlMsg(unix.RTM_DELADDR, make([]byte, unix.SizeofIfAddrmsg)), true},
		{"link", nlMsg(unix.RTM_NEWLINK, make([]byte, unix.SizeofIfInfomsg)), true},
		{"default route", nlMsg(unix.RTM_NEWROUTE, routeBody(0, unix.RT_TABLE_MAIN, unix.RTN_UNICAST,
			rtAttr(unix.RTA_GATEWAY, gw), rtAttr(unix.RTA_OIF, u32(2)))), true},
		{"default route deleted", nlMsg(unix.RTM_DELROUTE, routeBody(0, unix.RT_TABLE_MAIN, unix.RTN_UNICAST,
			rtAttr(unix.RTA_OIF, u32(2)))), true},
		{"default route, table in an attribute", nlMsg(unix.RTM_NEWROUTE, routeBody(0, unix.RT_TABLE_COMPAT, unix.RTN_UNICAST,
			rtAttr(unix.RTA_TABLE, u32(unix.RT_TABLE_MAIN)), rtAttr(unix.RTA_OIF, u32(2)))), true},
		{"route to a network", nlMsg(unix.RTM_NEWROUTE, routeBody(24, unix.RT_TABLE_MAIN, unix.RTN_UNICAST,
			rtAttr(unix.RTA_OIF, u32(2)))), false},
		{"default route of another table", nlMsg(unix.RTM_NEWROUTE, routeBody(0, 52, unix.RTN_UNICAST,
			rtAttr(unix.RTA_OIF, u32(2)))), false},
		{"default route of a big table number", nlMsg(unix.RTM_NEWROUTE, routeBody(0, unix.RT_TABLE_COMPAT, unix.RTN_UNICAST,
			rtAttr(unix.RTA_TABLE, u32(1000)), rtAttr(unix.RTA_OIF, u32(2)))), false},
		{"local route", nlMsg(unix.RTM_NEWROUTE, routeBody(0, unix.RT_TABLE_MAIN, unix.RTN_LOCAL)), false},
		{"neighbour", nlMsg(unix.RTM_NEWNEIGH, make([]byte, 12)), false},
		{"truncated route", nlMsg(unix.RTM_NEWROUTE, []byte{unix.AF_INET, 0}), false},
		{"less than a header", []byte{1, 2, 3}, false},
		{"header with a bad length", func() []byte {
			b := nlMsg(unix.RTM_NEWNEIGH, make([]byte, 12))
			binary.NativeEndian.PutUint32(b, 1000)
			return b
		}(), true},
	} {
		if got := isRelevant(tc.msg); got != tc.want {
			t.Errorf("%s: isRelevant = %v, want %v", tc.name, got, tc.want)
		}
	}
	// A batch is relevant when one of its messages is.
	batch := append(nlMsg(unix.RTM_NEWNEIGH, make([]byte, 12)), nlMsg(unix.RTM_DELADDR, make([]byte, unix.SizeofIfAddrmsg))...)
	if !isRelevant(batch) {
		t.Error("a batch ending in an address message is not relevant")
	}
}

func TestParseMultipathDefaultRoute(t *testing.T) {
	hop := func(index int32, gw string) []byte {
		attrs := rtAttr(unix.RTA_GATEWAY, netip.MustParseAddr(gw).AsSlice())
		b := make([]byte, unix.SizeofRtNexthop)
		binary.NativeEndian.PutUint16(b, uint16(unix.SizeofRtNexthop+len(attrs)))
		binary.NativeEndian.PutUint32(b[4:], uint32(index))
		return append(b, attrs...)
	}
	hops := append(hop(3, "198.18.5.1"), hop(4, "198.18.6.1")...)
	raw := nlMsg(unix.RTM_NEWROUTE, routeBody(0, unix.RT_TABLE_MAIN, unix.RTN_UNICAST,
		rtAttr(unix.RTA_PRIORITY, u32(20)), rtAttr(unix.RTA_MULTIPATH, hops)))
	msgs, err := parseMessages(raw)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("parse: %v %d", err, len(msgs))
	}
	got, ok := parseDefaultRoute(&msgs[0])
	want := []osRoute{
		{index: 3, gateway: netip.MustParseAddr("198.18.5.1"), metric: 20},
		{index: 4, gateway: netip.MustParseAddr("198.18.6.1"), metric: 20},
	}
	if !ok || !slices.Equal(got, want) {
		t.Fatalf("parseDefaultRoute = %v %v, want %v", got, ok, want)
	}
	// Truncated and overlong next hops end the list without a panic.
	for cut := range len(hops) {
		parseNextHops(hops[:cut], 0)
	}
	bad := slices.Clone(hops)
	binary.NativeEndian.PutUint16(bad, 0xffff)
	if got := parseNextHops(bad, 0); len(got) != 0 {
		t.Fatalf("overlong next hop parsed: %v", got)
	}
}

// FuzzRelevant feeds arbitrary bytes to the netlink parsing: it must not
// panic.
func FuzzRelevant(f *testing.F) {
	f.Add(nlMsg(unix.RTM_NEWADDR, make([]byte, unix.SizeofIfAddrmsg)))
	f.Add(nlMsg(unix.RTM_NEWROUTE, routeBody(0, unix.RT_TABLE_MAIN, unix.RTN_UNICAST,
		rtAttr(unix.RTA_OIF, u32(2)), rtAttr(unix.RTA_MULTIPATH, make([]byte, 16)))))
	f.Fuzz(func(t *testing.T, b []byte) {
		isRelevant(b)
		if msgs, err := parseMessages(b); err == nil {
			for i := range msgs {
				parseDefaultRoute(&msgs[i])
			}
		}
		parseNextHops(b, 0)
	})
}
