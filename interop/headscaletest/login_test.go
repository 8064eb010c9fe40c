package headscaletest

import (
	"context"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microlink-go/microlink"
	"github.com/microlink-go/microlink/interop/lab"
)

// registrationIDLength is the length of the registration IDs Headscale
// puts at the end of its login URLs, /register/<id>, and that
// "headscale nodes register --key" takes.
const registrationIDLength = 24

// loginName is the hostname of the node that logs in interactively.
const loginName = "ml-login"

// TestHeadscaleInteractiveLogin starts microlink without an auth key and
// checks that it waits in NeedsLogin with Headscale's login URL, that it
// becomes Connected once an administrator registers it with "headscale
// nodes register" and that Headscale then lists it under that user, and
// that a restart from the state directory connects without a new login.
func TestHeadscaleInteractiveLogin(t *testing.T) {
	if g := lab.MicrolinkGoroutines(); len(g) != 0 {
		t.Fatalf("microlink goroutines before the test:\n%s", strings.Join(g, "\n\n"))
	}
	t.Setenv("TS_AUTHKEY", "") // Config's fallback must not supply a key
	l := lab.Start(t, lab.Options{})
	hs := startHeadscale(t, l)
	const user = "alice"
	hs.createUser(t, user)
	stateDir := t.TempDir()

	// First start: no key, so Headscale answers with a login URL.
	n, rec := newLoginNode(t, hs, stateDir)
	startErr := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		startErr <- n.Start(ctx)
	}()
	var st microlink.Status
	waitFor(t, 15*time.Second, "NeedsLogin with an AuthURL", func() bool {
		select {
		case err := <-startErr:
			t.Fatalf("Start returned %v before the node was registered", err)
		default:
		}
		st = n.Status()
		return st.State == microlink.NeedsLogin && st.AuthURL != ""
	})
	id := registrationID(t, hs, st.AuthURL)
	t.Logf("login URL %s", st.AuthURL)
	if got := rec.urls(); !slices.Equal(got, []string{st.AuthURL}) {
		t.Errorf("OnAuthURL got %q, want the status's URL once", got)
	}
	if st.Addresses != nil || n.IPv4().IsValid() {
		t.Errorf("a node waiting for its login has addresses: %v", st.Addresses)
	}
	if nodes := hs.nodes(t); len(nodes) != 0 {
		t.Fatalf("headscale lists nodes before the registration: %+v", nodes)
	}
	// Nothing happens without the administrator.
	time.Sleep(300 * time.Millisecond)
	if s := n.State(); s != microlink.NeedsLogin {
		t.Fatalf("state %v before the registration, want NeedsLogin", s)
	}

	var reg hsNode
	hs.cliJSON(t, &reg, "nodes", "register", "--user", user, "--key", id)
	if reg.GivenName != loginName || reg.User.Name != user {
		t.Fatalf("nodes register: got %+v", reg)
	}
	select {
	case err := <-startErr:
		if err != nil {
			t.Fatalf("Start after the registration: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("Start has not returned 20s after the registration; state %v", n.State())
	}
	st = n.Status()
	if st.State != microlink.Connected || st.AuthURL != "" {
		t.Fatalf("status after the login: state %v, AuthURL %q", st.State, st.AuthURL)
	}
	if !prefix4.Contains(n.IPv4()) || !n.IPv4().Is4() {
		t.Fatalf("IPv4 %v is not in headscale's %v", n.IPv4(), prefix4)
	}
	if st.FQDN != loginName+"."+baseDomain {
		t.Errorf("FQDN %q, want %s.%s", st.FQDN, loginName, baseDomain)
	}
	ml := waitOnline(t, hs, loginName)
	if ml.ID != reg.ID || ml.User.Name != user || !slices.Contains(ml.IPAddresses, n.IPv4().String()) {
		t.Errorf("headscale's record %+v; registered %+v, microlink has %v", ml, reg, n.IPv4())
	}
	ip4, ip6 := n.IPv4(), n.IPv6()
	if err := n.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	// Second start from the same state directory: the node key is known
	// to Headscale, so no login is needed.
	n, rec = newLoginNode(t, hs, stateDir)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		t.Fatalf("Start after the restart: %v (state %v, AuthURL %q)", err, n.State(), n.Status().AuthURL)
	}
	if got := rec.urls(); len(got) != 0 {
		t.Errorf("the restarted node was sent to log in again: %q", got)
	}
	if slices.Contains(rec.states(), microlink.NeedsLogin) {
		t.Errorf("the restarted node went through NeedsLogin: %v", rec.states())
	}
	if n.IPv4() != ip4 || n.IPv6() != ip6 {
		t.Errorf("restarted node has %v %v, was %v %v", n.IPv4(), n.IPv6(), ip4, ip6)
	}
	ml = waitOnline(t, hs, loginName)
	if ml.ID != reg.ID {
		t.Errorf("headscale lists the restarted node as %+v, registered as ID %d", ml, reg.ID)
	}
	if nodes := hs.nodes(t); len(nodes) != 1 {
		t.Errorf("headscale lists %d nodes after the restart, want 1: %+v", len(nodes), nodes)
	}

	n.Close()
	lab.WaitNoMicrolinkGoroutines(t, 5*time.Second)
}

// loginRecorder records what a node reports through OnAuthURL and Watch.
type loginRecorder struct {
	mu sync.Mutex
	u  []string
	st []microlink.State
}

func (r *loginRecorder) urls() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.u)
}

func (r *loginRecorder) states() []microlink.State {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.st)
}

// newLoginNode makes a node without an auth key that logs in to hs; it is
// closed when t ends.
func newLoginNode(t *testing.T, hs *headscale, stateDir string) (*microlink.Node, *loginRecorder) {
	t.Helper()
	rec := new(loginRecorder)
	n, err := microlink.New(microlink.Config{
		ControlURL: hs.URL,
		Hostname:   loginName,
		StateDir:   stateDir,
		Port:       -1,
		Logger:     testLogger(t).With("node", loginName),
		OnAuthURL: func(u string) {
			rec.mu.Lock()
			rec.u = append(rec.u, u)
			rec.mu.Unlock()
		},
	})
	if err != nil {
		t.Fatalf("microlink.New: %v", err)
	}
	n.Watch(func(ev microlink.Event) {
		rec.mu.Lock()
		rec.st = append(rec.st, ev.State)
		rec.mu.Unlock()
	})
	t.Cleanup(func() { n.Close() })
	return n, rec
}

// registrationID checks that authURL is a Headscale login URL,
// <server_url>/register/<id>, and returns the id.
func registrationID(t *testing.T, hs *headscale, authURL string) string {
	t.Helper()
	u, err := url.Parse(authURL)
	if err != nil {
		t.Fatalf("AuthURL %q: %v", authURL, err)
	}
	base, _ := url.Parse(hs.URL)
	id, ok := strings.CutPrefix(u.Path, "/register/")
	if u.Scheme != base.Scheme || u.Host != base.Host || !ok || len(id) != registrationIDLength ||
		strings.ContainsFunc(id, func(r rune) bool { return !isURLSafe(r) }) {
		t.Fatalf("AuthURL %q is not %s/register/<%d-character id>", authURL, hs.URL, registrationIDLength)
	}
	return id
}

// isURLSafe reports whether r belongs to the URL-safe base64 alphabet.
func isURLSafe(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_'
}

// waitOnline waits until headscale lists the node with the given name as
// online and returns its record.
func waitOnline(t *testing.T, hs *headscale, name string) hsNode {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		nodes := hs.nodes(t)
		for _, nd := range nodes {
			if nd.GivenName == name && nd.Online {
				return nd
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("headscale does not list %s as online: %+v", name, nodes)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
