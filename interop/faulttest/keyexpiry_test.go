package faulttest

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microlink-go/microlink"
	"github.com/microlink-go/microlink/interop/lab"
	"tailscale.com/ipn/ipnstate"
	"tailscale.com/tstest/integration/testcontrol"
	"tailscale.com/types/key"
)

func parseNodeKey(t *testing.T, s string) key.NodePublic {
	t.Helper()
	var k key.NodePublic
	if err := k.UnmarshalText([]byte(s)); err != nil {
		t.Fatalf("node key %q: %v", s, err)
	}
	return k
}

// expireNodeKey has control expire a node's key: its self node says the
// key expired a minute ago.
func expireNodeKey(t *testing.T, s *testcontrol.Server, nodeKey string) {
	t.Helper()
	node := s.Node(parseNodeKey(t, nodeKey))
	if node == nil {
		t.Fatalf("control does not know %s", nodeKey)
	}
	node.KeyExpiry = time.Now().Add(-time.Minute)
	s.UpdateNode(node)
}

// settleRotation does what a real control server does after a key
// rotation that testcontrol leaves half done: the new key's entry, cloned
// from the old one, gets a fresh expiry, and the old key's entry no longer
// holds the node's ID and addresses (peers would otherwise see either key).
func settleRotation(t *testing.T, s *testcontrol.Server, oldKey, newKey string) {
	t.Helper()
	if node := s.Node(parseNodeKey(t, newKey)); node != nil {
		node.KeyExpiry = time.Time{}
		s.UpdateNode(node)
	}
	if old := s.Node(parseNodeKey(t, oldKey)); old != nil {
		old.ID = 1 << 20
		old.Addresses, old.AllowedIPs = nil, nil
		s.UpdateNode(old)
	}
}

// TestNodeKeyExpiredWithAuthKey: control expires the node's key; the node,
// which has an auth key, logs in with a new key at once and keeps its
// address, and a real peer reaches it under the new key.
func TestNodeKeyExpiredWithAuthKey(t *testing.T) {
	var regs registerCounter
	l := lab.Start(t, lab.Options{ConfigureControl: regs.configure})
	ts := l.StartTailscaled(t, lab.TSOptions{Hostname: "real-peer"})
	n := startNode(t, l, l.ControlURL, "ml-expire")
	trafficBothWays(t, n, ts, 10*time.Second)
	oldKey, ip := n.Status().NodeKey, n.IPv4()

	before := regs.count()
	expireNodeKey(t, l.Control, oldKey)
	took := waitFor(t, 15*time.Second, "Connected under a new key", func() bool {
		st := n.Status()
		return st.State == microlink.Connected && st.NodeKey != oldKey
	})
	newKey := n.Status().NodeKey
	settleRotation(t, l.Control, oldKey, newKey)
	if got := regs.count() - before; got != 1 {
		t.Errorf("control received %d register requests for the renewal, want 1", got)
	}
	if got := n.Stats().RegisterRequests; got != 2 {
		t.Errorf("microlink counted %d register requests, want 2 (the first login and the renewal)", got)
	}
	if got := n.IPv4(); got != ip {
		t.Errorf("address changed with the key: %v -> %v", ip, got)
	}
	traffic := trafficBothWays(t, n, ts, 15*time.Second)
	t.Logf("new key %v after control expired the old one; traffic both ways %v later", took.Round(time.Millisecond), traffic.Round(time.Millisecond))
	// The real peer has the new key at the node's address (the old key's
	// entry, moved aside by settleRotation, may linger under another ID).
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := ts.WaitStatus(ctx, func(st *ipnstate.Status) bool {
		for _, p := range st.Peer {
			if p.PublicKey.String() == newKey && slices.Contains(p.TailscaleIPs, ip) {
				return true
			}
		}
		return false
	}); err != nil {
		t.Errorf("the real peer does not know %s at %v: %v", newKey, ip, err)
	}
}

// TestNodeKeyExpiredWithoutAuthKey: a node that logged in interactively
// has its key expired by control: it asks for a login with a new URL
// (NeedsLogin, the URL in Status, the expiry in Health), and once the user
// logs in, a real peer reaches it under its new key.
func TestNodeKeyExpiredWithoutAuthKey(t *testing.T) {
	t.Setenv("TS_AUTHKEY", "") // Config's fallback must not supply a key
	l := lab.Start(t, lab.Options{ConfigureControl: func(s *testcontrol.Server) {
		s.RequireAuthKey, s.RequireAuth = "", true
	}})
	complete := func(u string) bool { return l.Control.CompleteAuth(u) }
	ts := l.StartTailscaled(t, lab.TSOptions{Hostname: "real-peer", CompleteAuth: complete})

	var mu sync.Mutex
	var urls []string
	n, err := microlink.New(microlink.Config{ControlURL: l.ControlURL, Hostname: "ml-interactive", StateDir: t.TempDir(), Port: -1,
		Logger: lab.Logger(t), OnAuthURL: func(u string) { mu.Lock(); urls = append(urls, u); mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	startErr := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		startErr <- n.Start(ctx)
	}()
	waitFor(t, 10*time.Second, "NeedsLogin", func() bool { return n.Status().AuthURL != "" })
	first := n.Status().AuthURL
	if !complete(first) {
		t.Fatalf("control does not know the login URL %s", first)
	}
	if err := <-startErr; err != nil {
		t.Fatalf("Start: %v", err)
	}
	trafficBothWays(t, n, ts, 10*time.Second)
	oldKey, ip := n.Status().NodeKey, n.IPv4()

	expireNodeKey(t, l.Control, oldKey)
	took := waitFor(t, 15*time.Second, "NeedsLogin with a new URL", func() bool {
		st := n.Status()
		return st.State == microlink.NeedsLogin && st.AuthURL != "" && st.AuthURL != first
	})
	st := n.Status()
	t.Logf("NeedsLogin %v after control expired the key: %s", took.Round(time.Millisecond), st.AuthURL)
	if !slices.ContainsFunc(st.Health, func(h string) bool { return strings.Contains(h, "node key expired") }) {
		t.Errorf("Health %q does not mention the expired key", st.Health)
	}
	mu.Lock()
	if !slices.Equal(urls, []string{first, st.AuthURL}) {
		t.Errorf("OnAuthURL got %q, want %q and %q", urls, first, st.AuthURL)
	}
	mu.Unlock()
	if !complete(st.AuthURL) {
		t.Fatalf("control does not know the login URL %s", st.AuthURL)
	}
	waitFor(t, 15*time.Second, "Connected under a new key", func() bool {
		st := n.Status()
		return st.State == microlink.Connected && st.NodeKey != oldKey
	})
	newKey := n.Status().NodeKey
	settleRotation(t, l.Control, oldKey, newKey)
	if got := n.IPv4(); got != ip {
		t.Errorf("address changed with the key: %v -> %v", ip, got)
	}
	traffic := trafficBothWays(t, n, ts, 15*time.Second)
	t.Logf("traffic both ways %v after the login", traffic.Round(time.Millisecond))
}
