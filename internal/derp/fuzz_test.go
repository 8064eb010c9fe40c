package derp

import (
	"bufio"
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/microlink-go/microlink/internal/key"
)

func FuzzReadFrame(f *testing.F) {
	f.Add(appendFrame(nil, frameServerKey, append([]byte(Magic), make([]byte, 32)...)))
	f.Add(appendFrame(nil, frameRecvPacket, make([]byte, 40)))
	f.Add(appendFrameHeader(nil, frameRecvPacket, 1<<20+1))
	f.Add([]byte{0x05, 0, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		ft, p, err := readFrame(bytes.NewReader(in), 1<<16, nil)
		if err != nil {
			return
		}
		if len(p) > 1<<16 || len(p)+frameHeaderLen > len(in) {
			t.Fatalf("payload of %d bytes from %d input bytes", len(p), len(in))
		}
		if back := appendFrame(nil, ft, p); !bytes.Equal(back, in[:len(back)]) {
			t.Fatalf("round trip %x != %x", back, in[:len(back)])
		}
	})
}

// FuzzClientRecv feeds arbitrary server bytes to an established client.
func FuzzClientRecv(f *testing.F) {
	var k key.NodePublic
	f.Add(appendFrame(nil, frameRecvPacket, append(k[:], "pkt"...)))
	f.Add(appendFrame(appendFrame(nil, framePing, []byte("12345678")), framePong, []byte("1234")))
	f.Add(appendFrame(nil, framePeerGone, append(k[:], 1)))
	f.Add(appendFrame(nil, framePeerPresent, append(k[:], make([]byte, 19)...)))
	f.Add(appendFrame(nil, frameRestarting, []byte{0, 0, 0, 1, 0, 0, 0, 2}))
	f.Add(appendFrame(nil, frameServerInfo, make([]byte, 60)))
	f.Add(appendFrame(nil, frameHealth, []byte("problem")))
	f.Add(appendFrameHeader(nil, 0x55, 5000))
	f.Fuzz(func(t *testing.T, in []byte) {
		c := newBytesClient(string(in))
		for range 1000 {
			m, err := c.Recv()
			if err != nil {
				return
			}
			if rp, ok := m.(*ReceivedPacket); ok && len(rp.Data) > len(in) {
				t.Fatalf("packet longer than the input")
			}
		}
	})
}

// FuzzParsers checks the payload parsers never panic and agree on sizes.
func FuzzParsers(f *testing.F) {
	f.Add(append([]byte(Magic), make([]byte, 32)...))
	f.Add(make([]byte, 33))
	f.Add(make([]byte, 51))
	f.Add([]byte{0, 0, 0, 1, 0, 0, 0, 2})
	f.Fuzz(func(t *testing.T, p []byte) {
		if _, err := parseServerKey(p); err == nil && len(p) < 40 {
			t.Fatal("short ServerKey accepted")
		}
		if _, err := parsePeerGone(p); err == nil && len(p) < 32 {
			t.Fatal("short PeerGone accepted")
		}
		if _, err := parsePeerPresent(p); err == nil && len(p) < 32 {
			t.Fatal("short PeerPresent accepted")
		}
		if _, err := parseRestarting(p); err == nil && len(p) < 8 {
			t.Fatal("short Restarting accepted")
		}
		if _, err := openServerInfo(key.NewPrivate(), key.NodePublic{}, p); err == nil {
			t.Fatal("forged ServerInfo accepted")
		}
	})
}

// FuzzHandshake feeds arbitrary bytes as the server side of the handshake.
func FuzzHandshake(f *testing.F) {
	f.Add(appendFrame(nil, frameServerKey, append([]byte(Magic), make([]byte, 32)...)))
	f.Add(appendFrame(appendFrame(nil, frameServerKey, append([]byte(Magic), make([]byte, 32)...)), frameServerInfo, make([]byte, 40)))
	f.Add([]byte("HTTP/1.1 101 Switching Protocols\r\n\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		conn := &bytesConn{r: bytes.NewReader(in)}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if _, err := newClient(ctx, conn, bufio.NewReader(conn), key.NodePublic{}, Options{PrivateKey: key.NewPrivate()}); err == nil {
			t.Fatal("handshake succeeded without a server key")
		}
	})
}

// FuzzUpgradeResponse feeds arbitrary bytes as the HTTP upgrade response.
func FuzzUpgradeResponse(f *testing.F) {
	f.Add("HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\nConnection: Upgrade\r\nDerp-Version: 2\r\n" +
		"Derp-Public-Key: " + strings.Repeat("ab", 32) + "\r\n\r\n")
	f.Add("HTTP/1.1 426 Upgrade Required\r\nContent-Length: 5\r\n\r\nnope!")
	f.Add("HTTP/1.1 101 Switching Protocols\r\nDerp-Public-Key: zz\r\n\r\n")
	f.Fuzz(func(t *testing.T, in string) {
		k, err := readUpgradeResponse(bufio.NewReader(strings.NewReader(in)))
		if err == nil && !k.IsZero() && !strings.Contains(strings.ToLower(in), k.String()[len("nodekey:"):]) {
			t.Fatalf("key %v not in the response", k)
		}
	})
}
