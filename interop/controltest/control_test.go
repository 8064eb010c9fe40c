package controltest

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microlink-go/microlink/internal/control"
	"github.com/microlink-go/microlink/internal/key"
	"github.com/microlink-go/microlink/internal/netmap"
	"github.com/microlink-go/microlink/internal/tailcfg"
	"github.com/microlink-go/microlink/interop/lab"
	tstailcfg "tailscale.com/tailcfg"
	"tailscale.com/tstest/integration/testcontrol"
	tskey "tailscale.com/types/key"
)

// node is one of our control clients in a lab, with what it has seen.
type node struct {
	c       *control.Client
	errc    chan error
	mu      sync.Mutex
	self    *tailcfg.Node
	peers   *netmap.Map
	maps    int
	states  []control.State
	newKeys []key.Private
}

func startNode(t *testing.T, l *lab.Lab, mutate func(*control.Options)) *node {
	t.Helper()
	n := &node{peers: netmap.New(netmap.Options{}), errc: make(chan error, 1)}
	opts := control.Options{
		ServerURL:  l.ControlURL,
		MachineKey: key.NewPrivate(),
		NodeKey:    key.NewPrivate(),
		AuthKey:    l.AuthKey,
		Hostinfo:   &tailcfg.Hostinfo{Hostname: "ml-" + strings.ToLower(t.Name()), OS: "linux", IPNVersion: "microlink-test"},
		OnState: func(s control.State) {
			n.mu.Lock()
			n.states = append(n.states, s)
			n.mu.Unlock()
		},
		OnNodeKey: func(k key.Private) {
			n.mu.Lock()
			n.newKeys = append(n.newKeys, k)
			n.mu.Unlock()
		},
		OnMapResponse: n.apply,
	}
	if mutate != nil {
		mutate(&opts)
	}
	c, err := control.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	n.c = c
	go func() { n.errc <- c.Run(context.Background()) }()
	t.Cleanup(func() { c.Close() })
	return n
}

// apply keeps the self node and applies the message to a netmap.
func (n *node) apply(m *netmap.Message) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.maps++
	if m.Node != nil {
		n.self = m.Node
	}
	n.peers.Apply(m)
}

func (n *node) view(f func(n *node) bool) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return f(n)
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func connected(t *testing.T, n *node) {
	t.Helper()
	waitFor(t, "Connected with self node", 15*time.Second, func() bool {
		return n.c.State().Kind == control.Connected && n.view(func(n *node) bool { return n.self != nil })
	})
}

func tsNodeKey(t *testing.T, k key.Private) tskey.NodePublic {
	var out tskey.NodePublic
	if err := out.UnmarshalText([]byte(k.NodePublic().String())); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestRegisterAndMap(t *testing.T) {
	l := lab.Start(t, lab.Options{})
	n := startNode(t, l, nil)
	connected(t, n)
	n.mu.Lock()
	self := n.self
	n.mu.Unlock()
	if self.Key != n.c.NodeKey().NodePublic() {
		t.Fatalf("self key %v", self.Key)
	}
	if len(self.Addresses) == 0 || !netip.MustParsePrefix("100.64.0.0/24").Contains(self.Addresses[0].Addr()) {
		t.Fatalf("self addresses %v", self.Addresses)
	}
	if tn := l.Control.Node(tsNodeKey(t, n.c.NodeKey())); tn == nil || tn.Cap != control.CapabilityVersion {
		t.Fatalf("control's node %+v", tn)
	}
}

func TestWrongAuthKey(t *testing.T) {
	l := lab.Start(t, lab.Options{})
	n := startNode(t, l, func(o *control.Options) { o.AuthKey = "tskey-wrong" })
	select {
	case err := <-n.errc:
		var re *control.RegisterError
		if !errors.As(err, &re) || !strings.Contains(err.Error(), "invalid authkey") {
			t.Fatalf("Run = %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not fail")
	}
}

// TestPeersAndDiscoKey registers two nodes: each sees the other as a peer,
// and the disco key one sends in a lite update reaches the other's map.
func TestPeersAndDiscoKey(t *testing.T) {
	l := lab.Start(t, lab.Options{})
	a := startNode(t, l, nil)
	connected(t, a)
	b := startNode(t, l, nil)
	connected(t, b)
	bKey := b.c.NodeKey().NodePublic()
	peerB := func(n *node) *netmap.Peer {
		for _, p := range n.peers.Peers() {
			if p.Key == bKey {
				return &p
			}
		}
		return nil
	}
	waitFor(t, "b in a's peers", 15*time.Second, func() bool { return a.view(func(n *node) bool { return peerB(n) != nil }) })

	disco := key.NewPrivate().DiscoPublic()
	b.c.SetDiscoKey(disco)
	b.c.SetEndpoints([]control.Endpoint{{AddrPort: netip.MustParseAddrPort("127.0.0.1:41641"), Type: tailcfg.EndpointLocal}})
	b.c.SetPreferredDERP(lab.DERPRegionID)
	waitFor(t, "b's disco key in a's map", 15*time.Second, func() bool {
		return a.view(func(n *node) bool { p := peerB(n); return p != nil && p.DiscoKey == disco })
	})
	tn := l.Control.Node(tsNodeKey(t, b.c.NodeKey()))
	waitFor(t, "b's endpoints and home DERP at control", 10*time.Second, func() bool {
		tn = l.Control.Node(tsNodeKey(t, b.c.NodeKey()))
		return tn != nil && len(tn.Endpoints) == 1 && tn.HomeDERP == lab.DERPRegionID
	})
	if tn.Endpoints[0].String() != "127.0.0.1:41641" {
		t.Fatalf("endpoints at control %v", tn.Endpoints)
	}
}

func TestReconnectAfterControlRestart(t *testing.T) {
	l := lab.Start(t, lab.Options{})
	n := startNode(t, l, nil)
	connected(t, n)
	before := 0
	n.view(func(n *node) bool { before = n.maps; return true })
	l.RestartControl(t)
	waitFor(t, "a new netmap after the restart", 20*time.Second, func() bool {
		return n.view(func(n *node) bool { return n.maps > before }) && n.c.State().Kind == control.Connected
	})
}

func TestRateLimitRetryAfter(t *testing.T) {
	var rejects atomic.Int32
	var firstAt, retryAt atomic.Int64
	l := lab.Start(t, lab.Options{ConfigureControl: func(s *testcontrol.Server) {
		s.MaybeRateLimitRegister = func() (bool, string, string) {
			if rejects.Add(1) == 1 {
				firstAt.Store(time.Now().UnixNano())
				return true, "2", "slow down"
			}
			retryAt.CompareAndSwap(0, time.Now().UnixNano())
			return false, "", ""
		}
	}})
	n := startNode(t, l, nil)
	connected(t, n)
	if gap := time.Duration(retryAt.Load() - firstAt.Load()); gap < 2*time.Second {
		t.Fatalf("retried after %v despite Retry-After: 2", gap)
	}
	var rl *control.RateLimitError
	if !n.view(func(n *node) bool {
		for _, s := range n.states {
			if errors.As(s.Err, &rl) {
				return true
			}
		}
		return false
	}) || rl.RetryAfter != 2*time.Second {
		t.Fatalf("no rate-limit state: %v", n.states)
	}
}

func TestPingRequests(t *testing.T) {
	l := lab.Start(t, lab.Options{})
	heads := make(chan string, 4)
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "HEAD" {
			heads <- r.URL.Path
		}
	}))
	defer target.Close()
	n := startNode(t, l, nil)
	connected(t, n)
	nk := tsNodeKey(t, n.c.NodeKey())
	if !l.Control.AddPingRequest(nk, &tstailcfg.PingRequest{URL: target.URL + "/ping-1"}) {
		t.Fatal("control did not queue the ping")
	}
	select {
	case p := <-heads:
		if p != "/ping-1" {
			t.Fatalf("HEAD %s", p)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no HEAD for the ping request")
	}

	// c2n /echo through testcontrol's own c2n plumbing.
	req, _ := http.NewRequest("POST", "http://node/echo", strings.NewReader("ping-body"))
	got := make(chan string, 1)
	if err := l.Control.SendC2N(nk, req, func(res *http.Response) {
		b := make([]byte, 64)
		k, _ := res.Body.Read(b)
		got <- res.Status + " " + string(b[:k])
	}); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		if s != "200 OK ping-body" {
			t.Fatalf("c2n answer %q", s)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no c2n answer")
	}
}

func TestNodeKeyExpiredRotation(t *testing.T) {
	l := lab.Start(t, lab.Options{})
	n := startNode(t, l, nil)
	connected(t, n)
	oldKey := n.c.NodeKey()
	var oldID tailcfg.NodeID
	n.view(func(n *node) bool { oldID = n.self.ID; return true })
	// testcontrol's map responses carry a 2020 ControlTime, so its expired
	// KeyExpiry does not look expired once corrected for that skew; the
	// register answer (NodeKeyExpired) is what drives the rotation here.
	l.Control.SetExpireAllNodes(true)
	l.RestartControl(t)
	// Control now calls every key expired, the rotated one too: the
	// client reports the failure and retries with backoff.
	waitFor(t, "a refused rotation", 15*time.Second, func() bool {
		s := n.c.State()
		return s.Kind == control.Error && strings.Contains(s.Err.Error(), "expired")
	})
	l.Control.SetExpireAllNodes(false)
	waitFor(t, "the new key registered", 30*time.Second, func() bool {
		return n.c.NodeKey() != oldKey && n.c.State().Kind == control.Connected
	})
	newKey := n.c.NodeKey()
	if !n.view(func(n *node) bool { return len(n.newKeys) == 1 && n.newKeys[0] == newKey }) {
		t.Fatalf("OnNodeKey calls %v", n.newKeys)
	}
	waitFor(t, "self node with the new key", 15*time.Second, func() bool {
		return n.view(func(n *node) bool { return n.self.Key == newKey.NodePublic() })
	})
	// Registered with OldNodeKey: control moved the same node to the new key.
	if n.view(func(n *node) bool { return n.self.ID != oldID }) {
		t.Fatal("rotation created a new node instead of re-keying the old one")
	}
	if l.Control.Node(tsNodeKey(t, newKey)) == nil {
		t.Fatal("control does not know the new key")
	}
}

func TestInteractiveLogin(t *testing.T) {
	l := lab.Start(t, lab.Options{ConfigureControl: func(s *testcontrol.Server) {
		s.RequireAuthKey = ""
		s.RequireAuth = true
	}})
	n := startNode(t, l, func(o *control.Options) { o.AuthKey = "" })
	waitFor(t, "NeedsLogin", 15*time.Second, func() bool { return n.c.State().Kind == control.NeedsLogin })
	url := n.c.State().AuthURL
	if !strings.HasPrefix(url, l.ControlURL+"/auth/") {
		t.Fatalf("AuthURL %q", url)
	}
	time.Sleep(100 * time.Millisecond) // let the followup request arrive
	if !l.Control.CompleteAuth(url) {
		t.Fatal("CompleteAuth failed")
	}
	connected(t, n)
}
