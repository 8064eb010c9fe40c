package packet

import (
	"encoding/hex"
	"net/netip"
	"strings"
	"testing"
)

// Golden packets, built by a separate script and checked by hand: ICMP echo
// request and reply (IPv4 ID 0x1c46, IPv6 flow label 0xabcde), UDP
// 41641 -> 53 carrying "hello", TSMP ping and pong (peerAPI port 41414 for
// IPv4, 0 for IPv6).
const (
	goldReq4  = "4500002c1c4600004001960864400001644000020800d0ee123400076d6963726f6c696e6b2d70696e672121"
	goldRep4  = "4500002ce3b900004001ce9464400002644000010000d8ee123400076d6963726f6c696e6b2d70696e672121"
	goldReq6  = "600abcde00183a40fd7a115ca1e000000000000000000001fd7a115ca1e0000000000000000000028000c63a432100096d6963726f6c696e6b2d70696e672121"
	goldRep6  = "6005432100183a40fd7a115ca1e000000000000000000002fd7a115ca1e0000000000000000000018100c53a432100096d6963726f6c696e6b2d70696e672121"
	goldUDP4  = "45000021000000004011b2496440000164400002a2a90035000d50a068656c6c6f"
	goldUDP6  = "60000000000d1140fd7a115ca1e000000000000000000001fd7a115ca1e000000000000000000002a2a90035000db7b168656c6c6f"
	goldPing4 = "4500001d010200004063b0f96440000164400002700102030405060708"
	goldPong4 = "4500001ffefd00004063b2fb64400002644000016f0102030405060708a1c6"
	goldPing6 = "6001234500096340fd7a115ca1e000000000000000000001fd7a115ca1e000000000000000000002700102030405060708"
	goldPong6 = "600edcba000b6340fd7a115ca1e000000000000000000002fd7a115ca1e0000000000000000000016f01020304050607080000"
)

var (
	a4 = netip.MustParseAddr("100.64.0.1")
	b4 = netip.MustParseAddr("100.64.0.2")
	a6 = netip.MustParseAddr("fd7a:115c:a1e0::1")
	b6 = netip.MustParseAddr("fd7a:115c:a1e0::2")
)

const goldData = "microlink-ping!!"

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// naiveChecksum is RFC 1071 written out the plain way, to check Checksum
// against.
func naiveChecksum(b []byte) uint16 {
	var s uint32
	for i := 0; i < len(b); i += 2 {
		w := uint32(b[i]) << 8
		if i+1 < len(b) {
			w |= uint32(b[i+1])
		}
		s += w
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

func mustDecode(t testing.TB, b []byte) *Parsed {
	t.Helper()
	p := new(Parsed)
	if err := p.Decode(b); err != nil {
		t.Fatalf("Decode(%x): %v", b, err)
	}
	return p
}

type netipAddr = netip.Addr

func netipAddrPort(a netip.Addr, port uint16) netip.AddrPort { return netip.AddrPortFrom(a, port) }

func hexDecode(s string) ([]byte, error) { return hex.DecodeString(s) }
