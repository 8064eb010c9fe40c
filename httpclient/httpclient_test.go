package httpclient

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/microlink-go/microlink"
)

// fakeNode resolves "laptop" to a test server, as a node resolves a
// MagicDNS name, and records what it was asked to dial.
type fakeNode struct {
	target string
	dialed []string
}

func (f *fakeNode) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	f.dialed = append(f.dialed, network+" "+addr)
	var d net.Dialer
	return d.DialContext(ctx, network, f.target)
}

func TestClientDialsThroughNode(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from "+r.Host)
	}))
	defer srv.Close()
	n := &fakeNode{target: srv.Listener.Addr().String()}
	t.Setenv("HTTP_PROXY", "http://127.0.0.1:1") // must not be used
	hc := New(n)
	res, err := hc.Get("http://laptop:8080/x")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if string(b) != "hello from laptop:8080" || len(n.dialed) != 1 || !strings.HasPrefix(n.dialed[0], "tcp laptop:8080") {
		t.Fatalf("got %q, dialed %q", b, n.dialed)
	}
}

// A node is a Dialer.
var _ Dialer = (*microlink.Node)(nil)
