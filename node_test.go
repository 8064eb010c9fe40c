package microlink

import (
	"net/netip"

	"bytes"
	"context"
	"errors"
	"github.com/microlink-go/microlink/internal/control"
	"github.com/microlink-go/microlink/internal/key"
	"github.com/microlink-go/microlink/internal/tailcfg"
	"github.com/microlink-go/microlink/internal/tunnel"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestNewCreatesAndReloadsIdentity(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	n1, err := New(Config{StateDir: dir, ControlURL: "http://127.0.0.1:1", Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	n2, err := New(Config{StateDir: dir, ControlURL: "http://127.0.0.1:1", Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if a, b := n1.Status().NodeKey, n2.Status().NodeKey; a != b || !strings.HasPrefix(a, "nodekey:") {
		t.Fatalf("node keys %s and %s", a, b)
	}
	fi, err := os.Stat(filepath.Join(dir, "microlink.state"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v %v", fi, err)
	}
	// Without a state directory every node is new.
	n3, _ := New(Config{ControlURL: "http://127.0.0.1:1", Logger: quietLogger()})
	n4, _ := New(Config{ControlURL: "http://127.0.0.1:1", Logger: quietLogger()})
	if n3.Status().NodeKey == n4.Status().NodeKey {
		t.Fatal("in-memory identities repeat")
	}
}

func TestNewCorruptState(t *testing.T) {
	dir := t.TempDir()
	bad := []byte(`{"MachineKey":"privkey:zz"}`)
	path := filepath.Join(dir, "microlink.state")
	os.WriteFile(path, bad, 0o600)
	_, err := New(Config{StateDir: dir, ControlURL: "http://127.0.0.1:1", Logger: quietLogger()})
	if err == nil || !strings.Contains(err.Error(), "microlink.state") {
		t.Fatalf("err = %v", err)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, bad) {
		t.Fatal("corrupt state overwritten")
	}
}

func TestBeforeStart(t *testing.T) {
	n, err := New(Config{ControlURL: "http://127.0.0.1:1", Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if n.State() != Stopped || n.IPv4().IsValid() || len(n.Peers()) != 0 {
		t.Fatalf("fresh node: %v %v %v", n.State(), n.IPv4(), n.Peers())
	}
	if _, err := n.ListenUDP(1); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("ListenUDP: %v", err)
	}
	if _, err := n.Ping(context.Background(), "x", PingDisco); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("Ping: %v", err)
	}
	if _, err := n.Resolve("nobody"); err == nil {
		t.Fatal("Resolve of an unknown name succeeded")
	}
	if err := n.Rebind(); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("Rebind: %v", err)
	}
	n.Close()
	if err := n.Start(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Start after Close: %v", err)
	}
	if err := n.WaitState(context.Background(), Connected); !errors.Is(err, ErrClosed) {
		t.Fatalf("WaitState after Close: %v", err)
	}
}

// TestStartUnreachableControl: Start waits, reports Connecting with the
// error through Watch, gives up with the context, and Close stops all.
func TestStartUnreachableControl(t *testing.T) {
	before := runtime.NumGoroutine()
	n, err := New(Config{ControlURL: "http://127.0.0.1:1", Port: -1, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	sawErr := make(chan error, 1)
	n.Watch(func(ev Event) {
		if ev.State == Connecting && ev.Err != nil {
			select {
			case sawErr <- ev.Err:
			default:
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if err := n.Start(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Start = %v", err)
	}
	select {
	case err := <-sawErr:
		t.Logf("reported: %v", err)
	default:
		t.Fatal("no Connecting event with the dial error")
	}
	if err := n.Start(context.Background()); err == nil {
		t.Fatal("second Start accepted")
	}
	n.Close()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("goroutines %d > %d after Close:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n.State() != Stopped {
		t.Fatalf("state %v", n.State())
	}
}

// offlineNode returns a node with a data plane but no control server,
// which tests drive by calling its handlers. It is closed when the test
// ends.
func offlineNode(t *testing.T) (*Node, *dataPlane) {
	t.Helper()
	n, err := New(Config{ControlURL: "http://127.0.0.1:1", Port: -1, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	n.stack = tunnel.New(tunnel.Config{Output: func([]byte) error { return nil }})
	n.disco = key.NewPrivate()
	data, err := n.newDataPlane(n.ident.NodeKey)
	if err != nil {
		t.Fatal(err)
	}
	n.data = data
	return n, data
}

// TestPeerKeyExpiryDropsPeer: a peer whose key expires between netmap
// messages is taken out of WireGuard when it expires.
func TestPeerKeyExpiryDropsPeer(t *testing.T) {
	n, data := offlineNode(t)
	peerKey := key.NewPrivate().NodePublic()
	n.onMapResponse(&tailcfg.MapResponse{
		Node: &tailcfg.Node{ID: 1, Key: n.ident.NodeKey.NodePublic(), Addresses: []netip.Prefix{netip.MustParsePrefix("100.64.0.1/32")}, MachineAuthorized: true},
		Peers: []*tailcfg.Node{{ID: 2, Name: "soon.ts.net.", Key: peerKey, DiscoKey: key.NewPrivate().DiscoPublic(),
			KeyExpiry: time.Now().Add(300 * time.Millisecond), Addresses: []netip.Prefix{netip.MustParsePrefix("100.64.0.2/32")}}},
	})
	if _, ok := data.wg.PeerStats(peerKey); !ok {
		t.Fatal("peer not configured in WireGuard")
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		if _, ok := data.wg.PeerStats(peerKey); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("expired peer still configured in WireGuard")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if p, _ := n.Peer("soon"); !p.Expired {
		t.Fatalf("Peer = %+v, want Expired", p)
	}
}

// TestStatsSurviveKeyRotation: the counters of the data plane a key
// rotation replaces stay in Stats.
func TestStatsSurviveKeyRotation(t *testing.T) {
	n, data := offlineNode(t)
	n.onMapResponse(&tailcfg.MapResponse{
		Node: &tailcfg.Node{ID: 1, Key: n.ident.NodeKey.NodePublic(), Addresses: []netip.Prefix{netip.MustParsePrefix("100.64.0.1/32")}, MachineAuthorized: true},
	})
	// A transport message for no session arrives through DERP: counted
	// as relayed, and dropped.
	junk := append([]byte{4, 0, 0, 0}, make([]byte, 44)...)
	data.ms.ReceiveDERP(1, key.NewPrivate().NodePublic(), junk)
	before := n.Stats()
	if before.DERPPacketsIn != 1 || before.DERPBytesIn != uint64(len(junk)) || before.Dropped == 0 || before.MapUpdates != 1 {
		t.Fatalf("stats before the rotation: %+v", before)
	}

	n.onNodeKey(key.NewPrivate())
	if n.data == data {
		t.Fatal("the data plane was not replaced")
	}
	if after := n.Stats(); after != before {
		t.Fatalf("stats after the rotation %+v, want %+v", after, before)
	}
	n.data.ms.ReceiveDERP(1, key.NewPrivate().NodePublic(), junk)
	if after := n.Stats(); after.DERPPacketsIn != 2 || after.Dropped <= before.Dropped {
		t.Fatalf("stats after one more message %+v", after)
	}
}

// TestConnectedWhenControlKnowsHome: a node whose self node, as control
// sends it, already names the home region it is connected to counts as
// reachable without waiting for a lite update; otherwise it waits.
func TestConnectedWhenControlKnowsHome(t *testing.T) {
	for _, tc := range []struct {
		controlHome int
		want        State
	}{{5, Connected}, {6, Connecting}, {0, Connecting}} {
		n, _ := offlineNode(t)
		n.setState(Connecting, "", nil)
		n.onControlState(control.State{Kind: control.Connected})
		n.onMapResponse(&tailcfg.MapResponse{
			Node: &tailcfg.Node{ID: 1, Key: n.ident.NodeKey.NodePublic(), HomeDERP: tc.controlHome, MachineAuthorized: true,
				Addresses: []netip.Prefix{netip.MustParsePrefix("100.64.0.1/32")}},
			DERPMap: &tailcfg.DERPMap{Regions: map[int]*tailcfg.DERPRegion{5: {RegionID: 5, RegionCode: "r5"}, 6: {RegionID: 6, RegionCode: "r6"}}},
		})
		if st := n.State(); st != Connecting {
			t.Fatalf("home %d: %v before the home DERP connection is up", tc.controlHome, st)
		}
		n.onHomeDERP(5)
		if st := n.State(); st != tc.want {
			t.Errorf("control's home %d, ours 5: %v, want %v", tc.controlHome, st, tc.want)
		}
		n.onReported(5, 1)
		if st := n.State(); st != Connected {
			t.Errorf("control's home %d: %v after control accepted ours", tc.controlHome, st)
		}
	}
}
