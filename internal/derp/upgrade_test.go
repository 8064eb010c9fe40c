package derp

import (
	"bufio"
	"io"
	"strings"
	"testing"

	"github.com/microlink-go/microlink/internal/key"
)

func TestReadUpgradeResponse(t *testing.T) {
	k := key.NewPrivate().Public()
	hexKey := strings.TrimPrefix(key.NodePublic(k).String(), "nodekey:")
	br := bufio.NewReader(strings.NewReader("HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n" +
		"Derp-Public-Key: " + hexKey + "\r\n\r\n\x01frames"))
	got, err := readUpgradeResponse(br)
	if err != nil || got != key.NodePublic(k) {
		t.Fatalf("key %v, %v", got, err)
	}
	if rest, _ := io.ReadAll(br); string(rest) != "\x01frames" {
		t.Fatalf("after the response: %q", rest)
	}
	got, err = readUpgradeResponse(bufio.NewReader(strings.NewReader("HTTP/1.1 101 Switching Protocols\r\n\r\n")))
	if err != nil || !got.IsZero() {
		t.Fatalf("no key header: %v, %v", got, err)
	}
	_, err = readUpgradeResponse(bufio.NewReader(strings.NewReader("HTTP/1.1 426 Upgrade Required\r\nContent-Length: 4\r\n\r\nnope")))
	if err == nil || !strings.Contains(err.Error(), `426 Upgrade Required: "nope"`) {
		t.Fatalf("refusal: %v", err)
	}
	for _, bad := range []string{"HTTP/1.1 101\r\nDerp-Public-Key: zz\r\n\r\n", "SSH-2.0\r\n\r\n", "HTTP/1.1 101 OK\r\n"} {
		if _, err := readUpgradeResponse(bufio.NewReader(strings.NewReader(bad))); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
