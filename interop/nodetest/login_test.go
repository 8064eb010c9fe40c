package nodetest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/microlink-go/microlink"
	"github.com/microlink-go/microlink/interop/lab"
	"tailscale.com/tstest/integration/testcontrol"
)

// TestInteractiveLogin: without an auth key the node reports NeedsLogin with
// the login URL (through Watch and OnAuthURL), and Start returns once the
// login is completed.
func TestInteractiveLogin(t *testing.T) {
	l := lab.Start(t, lab.Options{ConfigureControl: func(s *testcontrol.Server) {
		s.RequireAuthKey = ""
		s.RequireAuth = true
	}})
	urls := make(chan string, 4)
	n, err := microlink.New(microlink.Config{ControlURL: l.ControlURL, Hostname: "ml-login", StateDir: t.TempDir(), Port: -1,
		Logger: testLogger(t), OnAuthURL: func(u string) { urls <- u }})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	watched := make(chan string, 4)
	n.Watch(func(ev microlink.Event) {
		if ev.State == microlink.NeedsLogin {
			select {
			case watched <- ev.AuthURL:
			default:
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	started := make(chan error, 1)
	go func() { started <- n.Start(ctx) }()

	var url string
	select {
	case url = <-urls:
	case err := <-started:
		t.Fatalf("Start returned before login: %v", err)
	case <-ctx.Done():
		t.Fatal("no login URL")
	}
	if !strings.HasPrefix(url, l.ControlURL+"/auth/") {
		t.Fatalf("login URL %q", url)
	}
	if got := <-watched; got != url {
		t.Fatalf("Watch saw %q, OnAuthURL %q", got, url)
	}
	if st := n.Status(); st.State != microlink.NeedsLogin || st.AuthURL != url {
		t.Fatalf("status = %+v", st)
	}
	if !l.Control.CompleteAuth(url) {
		t.Fatal("control did not accept the login")
	}
	if err := <-started; err != nil {
		t.Fatalf("Start after login: %v", err)
	}
	if !n.IPv4().IsValid() {
		t.Fatal("no address after login")
	}
}

// TestDeviceApproval: a tailnet that requires approval leaves the node in
// NeedsApproval until an administrator approves it.
func TestDeviceApproval(t *testing.T) {
	l := lab.Start(t, lab.Options{ConfigureControl: func(s *testcontrol.Server) {
		s.RequireMachineAuth = true
	}})
	n, err := microlink.New(microlink.Config{AuthKey: l.AuthKey, ControlURL: l.ControlURL, Hostname: "ml-approve", StateDir: t.TempDir(), Port: -1, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	started := make(chan error, 1)
	go func() { started <- n.Start(ctx) }()
	if err := n.WaitState(ctx, microlink.NeedsApproval); err != nil {
		t.Fatalf("never NeedsApproval: %v (state %v)", err, n.State())
	}
	select {
	case err := <-started:
		t.Fatalf("Start returned while awaiting approval: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	k := nodeKey(t, n.Status().NodeKey)
	if !l.Control.CompleteDeviceApproval(l.ControlURL, l.ControlURL+"/admin", &k) {
		t.Fatal("control did not approve")
	}
	if err := <-started; err != nil {
		t.Fatalf("Start after approval: %v", err)
	}
}
