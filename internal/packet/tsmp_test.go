package packet

import (
	"bytes"
	"testing"

	"github.com/microlink-go/microlink/internal/key"
)

func TestTSMPPingGolden(t *testing.T) {
	data := [8]byte{1, 2, 3, 4, 5, 6, 7, 8}
	b := make([]byte, 100)
	n, err := BuildTSMPPing(b, a4, b4, data)
	if err != nil {
		t.Fatal(err)
	}
	// The golden ping has IPv4 ID 0x0102; BuildTSMPPing writes 0.
	want := unhex(t, goldPing4)
	if !bytes.Equal(b[20:n], want[20:]) || !bytes.Equal(b[12:20], want[12:20]) || b[9] != 99 || b[8] != 64 || naiveChecksum(b[:20]) != 0 {
		t.Errorf("got %x", b[:n])
	}
	p := mustDecode(t, b[:n])
	if got, ok := p.TSMPPingData(); !ok || got != data {
		t.Errorf("TSMPPingData = %x, %v", got, ok)
	}
	if _, _, ok := p.TSMPPongData(); ok {
		t.Error("ping parsed as pong")
	}
}

func TestTSMPPongGolden(t *testing.T) {
	for _, tc := range []struct {
		name, ping, pong string
		port             uint16
	}{
		{"v4", goldPing4, goldPong4, 41414},
		{"v6", goldPing6, goldPong6, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ping := mustDecode(t, unhex(t, tc.ping))
			b := make([]byte, 100)
			n, err := BuildTSMPPong(b, ping, tc.port)
			if err != nil {
				t.Fatal(err)
			}
			if want := unhex(t, tc.pong); !bytes.Equal(b[:n], want) {
				t.Fatalf("got  %x\nwant %x", b[:n], want)
			}
			p := mustDecode(t, b[:n])
			data, port, ok := p.TSMPPongData()
			if !ok || data != [8]byte{1, 2, 3, 4, 5, 6, 7, 8} || port != tc.port {
				t.Errorf("TSMPPongData = %x %d %v", data, port, ok)
			}
			if p.Src != ping.Dst || p.Dst != ping.Src {
				t.Errorf("pong %v for ping %v", p, ping)
			}
			// In place, into the ping's own buffer.
			buf := append(unhex(t, tc.ping), 0, 0)
			ping = mustDecode(t, buf)
			n, err = BuildTSMPPong(buf, ping, tc.port)
			if err != nil || !bytes.Equal(buf[:n], unhex(t, tc.pong)) {
				t.Errorf("in place: %v %x", err, buf[:n])
			}
			// Only pings get pongs.
			if _, err := BuildTSMPPong(b, mustDecode(t, unhex(t, goldUDP4)), 0); err == nil {
				t.Error("pong for UDP")
			}
		})
	}
}

func TestTSMPPongWithoutPort(t *testing.T) {
	// A pong of 9 bytes (no port) is still a pong.
	b := unhex(t, goldPing4)
	b[20] = 'o'
	p := mustDecode(t, b)
	if data, port, ok := p.TSMPPongData(); !ok || port != 0 || data[7] != 8 {
		t.Errorf("short pong: %x %d %v", data, port, ok)
	}
}

func TestTSMPReject(t *testing.T) {
	for _, r := range []TSMPReject{
		{Proto: ProtoTCP, Reason: RejectACL, SrcPort: 51000, DstPort: 22},
		{Proto: ProtoUDP, Reason: RejectHostFirewall, SrcPort: 1, DstPort: 65535, MaybeBroken: true},
	} {
		for _, pair := range [][2]netipAddr{{a4, b4}, {a6, b6}} {
			b := make([]byte, 100)
			n, err := BuildTSMPReject(b, pair[0], pair[1], r)
			if err != nil {
				t.Fatal(err)
			}
			hl := IPHeaderLen(pair[0])
			wantLen := 7
			if r.MaybeBroken {
				wantLen = 8
			}
			if n != hl+wantLen {
				t.Fatalf("length %d, want %d", n, hl+wantLen)
			}
			m := b[hl:n]
			if m[0] != '!' || m[1] != byte(r.Proto) || m[2] != byte(r.Reason) ||
				int(m[3])<<8|int(m[4]) != int(r.SrcPort) || int(m[5])<<8|int(m[6]) != int(r.DstPort) {
				t.Errorf("wire %x", m)
			}
			p := mustDecode(t, b[:n])
			got, ok := p.TSMPReject()
			if !ok || got != r {
				t.Errorf("TSMPReject = %+v %v, want %+v", got, ok, r)
			}
			if typ, ok := p.TSMPType(); !ok || typ != TSMPRejected {
				t.Errorf("TSMPType = %v %v", typ, ok)
			}
		}
	}
}

func TestTSMPDiscoKey(t *testing.T) {
	var k key.DiscoPublic
	for i := range k {
		k[i] = byte(i + 100)
	}
	for _, pair := range [][2]netipAddr{{a4, b4}, {a6, b6}} {
		b := make([]byte, 100)
		n, err := BuildTSMPDiscoKey(b, pair[0], pair[1], k)
		if err != nil {
			t.Fatal(err)
		}
		hl := IPHeaderLen(pair[0])
		if n != hl+33 || b[hl] != 'a' || !bytes.Equal(b[hl+1:n], k[:]) {
			t.Fatalf("wire %x", b[:n])
		}
		p := mustDecode(t, b[:n])
		if got, ok := p.TSMPDiscoKey(); !ok || got != k {
			t.Errorf("TSMPDiscoKey = %x %v", got, ok)
		}
		// Truncated advertisement.
		c := append([]byte{}, b[:n-1]...)
		if c[0]>>4 == 4 {
			c[3]--
		} else {
			c[5]--
		}
		q := mustDecode(t, c)
		if _, ok := q.TSMPDiscoKey(); ok {
			t.Error("short advertisement parsed")
		}
	}
}

func TestTSMPNotTSMP(t *testing.T) {
	// A UDP payload that looks like a TSMP ping is not one.
	b := make([]byte, 100)
	n, err := BuildUDP(b, netipAddrPort(a4, 1), netipAddrPort(b4, 2), []byte("p12345678"))
	if err != nil {
		t.Fatal(err)
	}
	p := mustDecode(t, b[:n])
	if _, ok := p.TSMPPingData(); ok {
		t.Error("UDP parsed as TSMP ping")
	}
	if _, ok := p.TSMPType(); ok {
		t.Error("UDP has a TSMP type")
	}
}
