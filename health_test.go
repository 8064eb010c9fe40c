package microlink

import (
	"bytes"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microlink-go/microlink/internal/tailcfg"
)

// syncBuffer is a bytes.Buffer safe for a logger's concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestKeyExpiryWarning: the node key's expiry is in Status; from 7 days
// before it, Health says so and the log warns, once per expiry.
func TestKeyExpiryWarning(t *testing.T) {
	n, _ := offlineNode(t)
	var logs syncBuffer
	n.logger = slog.New(slog.NewTextHandler(&logs, nil))
	self := func(expiry time.Time) *tailcfg.MapResponse {
		return &tailcfg.MapResponse{Node: &tailcfg.Node{ID: 1, Key: n.ident.NodeKey.NodePublic(), KeyExpiry: expiry,
			Addresses: []netip.Prefix{netip.MustParsePrefix("100.64.0.1/32")}, MachineAuthorized: true}}
	}

	far := time.Now().Add(30 * 24 * time.Hour).Truncate(time.Second)
	n.onMapResponse(self(far))
	st := n.Status()
	if !st.KeyExpiry.Equal(far) || len(st.Health) != 0 {
		t.Fatalf("far expiry: KeyExpiry %v, Health %q", st.KeyExpiry, st.Health)
	}
	n.mu.Lock()
	armed := n.keyWarnTimer != nil
	n.mu.Unlock()
	if !armed || strings.Contains(logs.String(), "expires") || strings.Count(logs.String(), "node key expiry") != 1 {
		t.Fatalf("far expiry: timer armed %v, log %q", armed, logs.String())
	}

	soon := time.Now().Add(3 * 24 * time.Hour).Truncate(time.Second)
	n.onMapResponse(self(soon))
	n.onMapResponse(self(soon))
	st = n.Status()
	if len(st.Health) != 1 || !strings.Contains(st.Health[0], "node key expires in 3d0h") || !strings.Contains(st.Health[0], "a login will be needed") {
		t.Fatalf("Health %q", st.Health)
	}
	if c := strings.Count(logs.String(), "node key expires in"); c != 1 {
		t.Fatalf("%d warnings in the log:\n%s", c, logs.String())
	}

	n.cfg.AuthKey = "tskey-x"
	if h := n.Status().Health; len(h) != 1 || !strings.Contains(h[0], "renewed with the auth key") {
		t.Fatalf("with an auth key: Health %q", h)
	}
	n.onMapResponse(self(time.Now().Add(-time.Minute)))
	if h := n.Status().Health; len(h) != 1 || !strings.Contains(h[0], "node key expired at") {
		t.Fatalf("expired: Health %q", h)
	}
	n.onMapResponse(self(time.Time{}))
	if st := n.Status(); !st.KeyExpiry.IsZero() || len(st.Health) != 0 {
		t.Fatalf("no expiry: KeyExpiry %v, Health %q", st.KeyExpiry, st.Health)
	}
}
