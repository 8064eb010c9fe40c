package control

import (
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microlink-go/microlink/internal/h2"
	"github.com/microlink-go/microlink/internal/netmap"
	"github.com/microlink-go/microlink/internal/tailcfg"
)

// registers returns a copy of the register requests the fake has seen.
func (f *fakeControl) registerList() []*tailcfg.RegisterRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.registers)
}

// setMapStatus makes the fake answer map requests with status, or
// normally for 0.
func (f *fakeControl) setMapStatus(status int) {
	f.mu.Lock()
	f.mapStatus = status
	f.mu.Unlock()
}

// connect starts a client on f, with opts changed by edit if not nil, and
// waits until it is Connected.
func connect(t *testing.T, f *fakeControl, edit func(*Options)) (*Client, *recorder) {
	t.Helper()
	r := new(recorder)
	opts := r.options(f)
	if edit != nil {
		edit(&opts)
	}
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	run(t, c)
	waitUntil(t, "Connected", func() bool { return c.State().Kind == Connected })
	return c, r
}

// TestReconnectsDoNotLogIn: dropped connections are followed by new map
// polls, never by new logins.
func TestReconnectsDoNotLogIn(t *testing.T) {
	f := newFakeControl(t)
	f.authKey = "tskey-good"
	var r recorder
	opts := r.options(f)
	opts.AuthKey = "tskey-good"
	c, _ := New(opts)
	run(t, c)
	waitUntil(t, "Connected", func() bool { return c.State().Kind == Connected })
	for i := range 3 {
		f.srv.CloseConns()
		f.waitFor("a new poll", func() bool { return len(f.polls) >= i+2 })
		waitUntil(t, "Connected again", func() bool { return c.State().Kind == Connected && r.numMaps() >= i+2 })
	}
	if regs := f.registerList(); len(regs) != 1 || c.RegisterRequests() != 1 {
		t.Fatalf("%d register requests at the server, %d counted, want 1", len(regs), c.RegisterRequests())
	}
}

// TestRegisteredGoesStraightToPoll: a node whose key control accepted in an
// earlier run polls without logging in.
func TestRegisteredGoesStraightToPoll(t *testing.T) {
	f := newFakeControl(t)
	f.authKey, f.checkKnown = "tskey-used", true
	var r recorder
	opts := r.options(f)
	opts.AuthKey, opts.Registered = "tskey-used", true
	f.known[opts.NodeKey.NodePublic()] = true
	c, _ := New(opts)
	run(t, c)
	waitUntil(t, "Connected", func() bool { return c.State().Kind == Connected })
	if n := len(f.registerList()); n != 0 || c.RegisterRequests() != 0 {
		t.Fatalf("%d register requests for a registered node", n)
	}
}

// TestLostNodeLogsInAgain: control that does not know the node (a restart
// from a stored identity control never accepted, or a server that lost its
// database) answers the map requests with 404; the node logs in once with
// its auth key and polls again.
func TestLostNodeLogsInAgain(t *testing.T) {
	for _, registered := range []bool{false, true} {
		name := "after a login"
		if registered {
			name = "at a restart"
		}
		t.Run(name, func(t *testing.T) {
			f := newFakeControl(t)
			f.authKey, f.checkKnown = "tskey-good", true
			var r recorder
			opts := r.options(f)
			opts.AuthKey, opts.Registered = "tskey-good", registered
			c, _ := New(opts)
			run(t, c)
			waitUntil(t, "Connected", func() bool { return c.State().Kind == Connected })
			want := 1 // at a restart, the first lite update found the node unknown
			if !registered {
				f.mu.Lock()
				clear(f.known) // the server loses its database...
				f.mu.Unlock()
				f.srv.CloseConns() // ...and restarts
				want = 2
				f.waitFor("a second login", func() bool { return len(f.registers) == 2 })
				waitUntil(t, "Connected again", func() bool { return c.State().Kind == Connected && r.numMaps() >= 2 })
			}
			regs := f.registerList()
			if len(regs) != want || c.RegisterRequests() != uint64(want) {
				t.Fatalf("%d register requests, want %d", len(regs), want)
			}
			last := regs[len(regs)-1]
			if last.Auth == nil || last.Auth.AuthKey != "tskey-good" || last.NodeKey != opts.NodeKey.NodePublic() || !last.OldNodeKey.IsZero() {
				t.Fatalf("login request %+v", last)
			}
		})
	}
}

// TestLostNodeWhilePolling: control that loses the node but keeps its map
// stream open (as Headscale does when the node is deleted) answers the next
// lite update with 404; the node logs in again then.
func TestLostNodeWhilePolling(t *testing.T) {
	f := newFakeControl(t)
	f.authKey, f.checkKnown = "tskey-good", true
	c, r := connect(t, f, func(o *Options) { o.AuthKey = "tskey-good" })
	f.mu.Lock()
	clear(f.known)
	f.mu.Unlock()
	c.SetEndpoints([]Endpoint{{netip.MustParseAddrPort("192.0.2.8:41641"), tailcfg.EndpointSTUN}})
	f.waitFor("a second login", func() bool { return len(f.registers) == 2 })
	waitUntil(t, "Connected again", func() bool { return c.State().Kind == Connected && r.numMaps() >= 2 })
}

// TestLostNodeNotLoggedInTwice: a server that keeps answering 404 after a
// login gets no login after every backoff, only polls.
func TestLostNodeNotLoggedInTwice(t *testing.T) {
	f := newFakeControl(t)
	c, _ := connect(t, f, nil)
	f.setMapStatus(404)
	f.srv.CloseConns()
	waitUntil(t, "the error in the state", func() bool {
		s := c.State()
		return s.Kind == Error && strings.Contains(s.Err.Error(), "404")
	})
	time.Sleep(2500 * time.Millisecond) // a few backoff steps
	if n := len(f.registerList()); n != 2 {
		t.Fatalf("%d register requests, want the first login and one more", n)
	}
	f.setMapStatus(0)
	waitUntil(t, "Connected again", func() bool { return c.State().Kind == Connected })
}

// TestRefusalAfterLoginRetried: once the node has logged in, a refusal (the
// auth key was revoked when control lost the node) does not end Run: it is
// retried with backoff, shown in State, and the node comes back when control
// accepts it again.
func TestRefusalAfterLoginRetried(t *testing.T) {
	f := newFakeControl(t)
	f.authKey, f.checkKnown = "tskey-good", true
	var r recorder
	opts := r.options(f)
	opts.AuthKey = "tskey-good"
	c, _ := New(opts)
	errc := run(t, c)
	waitUntil(t, "Connected", func() bool { return c.State().Kind == Connected })
	f.mu.Lock()
	f.authKey = "tskey-other"
	clear(f.known)
	f.mu.Unlock()
	f.srv.CloseConns()
	waitUntil(t, "the refusal in the state", func() bool {
		s := c.State()
		var re *RegisterError
		return s.Kind == Error && errors.As(s.Err, &re) && strings.Contains(re.Msg, "invalid authkey")
	})
	f.waitFor("the refused login retried", func() bool { return len(f.registers) >= 3 })
	select {
	case err := <-errc:
		t.Fatalf("Run returned %v", err)
	default:
	}
	f.mu.Lock()
	f.authKey = "tskey-good"
	f.mu.Unlock()
	waitUntil(t, "Connected again", func() bool { return c.State().Kind == Connected && r.numMaps() >= 2 })
}

// TestServerErrorsRetried: 5xx answers to the map requests are retried
// without a login.
func TestServerErrorsRetried(t *testing.T) {
	f := newFakeControl(t)
	c, _ := connect(t, f, nil)
	f.setMapStatus(502)
	f.srv.CloseConns()
	waitUntil(t, "the error in the state", func() bool {
		s := c.State()
		var he *HTTPError
		return s.Kind == Error && errors.As(s.Err, &he) && he.Status == 502
	})
	f.setMapStatus(0)
	waitUntil(t, "Connected again", func() bool { return c.State().Kind == Connected })
	if n := len(f.registerList()); n != 1 {
		t.Fatalf("%d register requests", n)
	}
}

// TestNewStreamCallback: OnNewStream comes before the first message of each
// stream, and only then.
func TestNewStreamCallback(t *testing.T) {
	f := newFakeControl(t)
	var r recorder
	opts := r.options(f)
	var mu sync.Mutex
	var events []string
	opts.OnNewStream = func() { mu.Lock(); events = append(events, "new"); mu.Unlock() }
	opts.OnMapResponse = func(m *netmap.Message) {
		mu.Lock()
		events = append(events, "map")
		mu.Unlock()
		r.mu.Lock()
		r.maps = append(r.maps, m)
		r.mu.Unlock()
	}
	c, _ := New(opts)
	run(t, c)
	waitUntil(t, "Connected", func() bool { return c.State().Kind == Connected })
	f.push <- &tailcfg.MapResponse{Domain: "example"}
	waitUntil(t, "the delta", func() bool { return r.numMaps() == 2 })
	f.srv.CloseConns()
	waitUntil(t, "the second stream", func() bool { return r.numMaps() == 3 })
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"new", "map", "map", "new", "map"}; !slices.Equal(events, want) {
		t.Fatalf("events %v, want %v", events, want)
	}
}

// TestWatchdogFromRequest: a server that takes the poll and never answers
// it is left by the watchdog like one that goes quiet later.
func TestWatchdogFromRequest(t *testing.T) {
	f := newFakeControl(t)
	f.holdPolls = true
	var r recorder
	opts := r.options(f)
	opts.PollTimeout = 300 * time.Millisecond
	c, _ := New(opts)
	run(t, c)
	f.waitFor("a second poll", func() bool { return len(f.polls) >= 2 })
	s := c.State()
	if s.Kind != Error || !strings.Contains(s.Err.Error(), "no map message") {
		t.Fatalf("state %v", s)
	}
	if n := f.srv.Upgrades.Load(); n < 2 {
		t.Fatalf("the watchdog kept the connection (%d dials)", n)
	}
}

// TestRebindRedialsAtOnce: Rebind moves the map poll to a new connection
// at once, without a login and without a backoff.
func TestRebindRedialsAtOnce(t *testing.T) {
	f := newFakeControl(t)
	c, r := connect(t, f, nil)
	f.mu.Lock()
	pollConn := f.pollRemotes[0]
	f.mu.Unlock()
	start := time.Now()
	c.Rebind()
	f.waitFor("a new poll", func() bool { return len(f.polls) == 2 })
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Fatalf("new poll after %v", took)
	}
	f.mu.Lock()
	newConn := f.pollRemotes[1]
	f.mu.Unlock()
	if newConn == pollConn {
		t.Fatalf("the poll after Rebind came on the old connection %s", newConn)
	}
	waitUntil(t, "Connected", func() bool { return c.State().Kind == Connected && r.numMaps() == 2 })
	f.mu.Lock()
	liteConn := f.liteRemotes[len(f.liteRemotes)-1]
	f.mu.Unlock()
	if liteConn != newConn {
		t.Errorf("the lite update after Rebind came on %s, the poll on %s", liteConn, newConn)
	}
	if n := len(f.registerList()); n != 1 {
		t.Fatalf("%d register requests", n)
	}

	// During a backoff after failures, Rebind tries again at once.
	f.setMapStatus(503)
	f.srv.CloseConns()
	waitUntil(t, "two failures", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.srv.Upgrades.Load() >= 4
	})
	f.setMapStatus(0)
	waitUntil(t, "the error state", func() bool { return c.State().Kind == Error })
	start = time.Now()
	c.Rebind()
	waitUntil(t, "Connected again", func() bool { return c.State().Kind == Connected })
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Fatalf("reconnected %v after Rebind", took)
	}
}

// TestChangeDuringReconnect: endpoints that change while a new session's
// first lite update is on its way (as after Rebind, when the new socket's
// endpoints arrive) still reach control.
func TestChangeDuringReconnect(t *testing.T) {
	f := newFakeControl(t)
	c, _ := connect(t, f, nil)
	f.mu.Lock()
	f.liteDelay = 300 * time.Millisecond
	f.mu.Unlock()
	c.Rebind()
	time.Sleep(100 * time.Millisecond) // the new session's lite update is in flight
	ep := []Endpoint{{netip.MustParseAddrPort("192.0.2.7:41641"), tailcfg.EndpointSTUN}}
	c.SetEndpoints(ep)
	f.waitFor("a lite update with the new endpoint", func() bool {
		l := f.lites[len(f.lites)-1]
		return len(l.Endpoints) == 1 && l.Endpoints[0] == ep[0].AddrPort
	})
}

// freezeProxy forwards TCP connections to a server and can black-hole
// them: while frozen, nothing passes either way (new connections included)
// but nothing is closed, as when a middlebox drops every packet.
type freezeProxy struct {
	ln     net.Listener
	target string
	frozen atomic.Bool
	mu     sync.Mutex
	conns  []net.Conn
}

func newFreezeProxy(t *testing.T, target string) *freezeProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &freezeProxy{ln: ln, target: target}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			wg.Go(func() { p.copy(s, c) })
			wg.Go(func() { p.copy(c, s) })
		}
	})
	return p
}

func (p *freezeProxy) copy(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		for p.frozen.Load() && err == nil {
			time.Sleep(5 * time.Millisecond) // held, as in a black hole
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			dst.Close()
			return
		}
	}
}

// URL returns the proxy's URL for a server URL.
func (p *freezeProxy) URL(t *testing.T, server string) string {
	u, err := url.Parse(server)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = p.ln.Addr().String()
	return u.String()
}

// TestPingNoticesBlackHole: a control connection that stops carrying
// anything is noticed through HTTP/2 PINGs long before the map watchdog,
// and the node comes back when packets flow again, without a login.
func TestPingNoticesBlackHole(t *testing.T) {
	f := newFakeControl(t)
	p := newFreezeProxy(t, strings.TrimPrefix(f.srv.URL, "http://"))
	var r recorder
	opts := r.options(f)
	opts.ServerURL = p.URL(t, f.srv.URL)
	opts.PingAfter, opts.PingTimeout = 200*time.Millisecond, 200*time.Millisecond
	c, _ := New(opts)
	run(t, c)
	waitUntil(t, "Connected", func() bool { return c.State().Kind == Connected })
	p.frozen.Store(true)
	start := time.Now()
	waitUntil(t, "the dead connection noticed", func() bool { return c.State().Kind == Error })
	took := time.Since(start)
	var pe h2.PingTimeoutError
	if s := c.State(); !errors.As(s.Err, &pe) {
		t.Fatalf("state %v, want a PING timeout", s)
	}
	if took > 3*time.Second {
		t.Fatalf("noticed after %v", took)
	}
	p.frozen.Store(false)
	waitUntil(t, "Connected again", func() bool { return c.State().Kind == Connected && r.numMaps() >= 2 })
	if n := len(f.registerList()); n != 1 {
		t.Fatalf("%d register requests", n)
	}
}

// TestFollowupAskedAgain: an interactive login's follow-up has a deadline
// too; when it passes, the same follow-up is sent again (the login URL
// stays valid and is not shown anew).
func TestFollowupAskedAgain(t *testing.T) {
	defer func(d time.Duration) { followupTimeout = d }(followupTimeout)
	followupTimeout = 200 * time.Millisecond
	f := newFakeControl(t)
	f.interactive = true
	var r recorder
	c, _ := New(r.options(f))
	run(t, c)
	waitUntil(t, "NeedsLogin", func() bool { return c.State().Kind == NeedsLogin })
	url := c.State().AuthURL
	f.waitFor("three follow-ups", func() bool {
		n := 0
		for _, reg := range f.registers {
			if reg.Followup == url {
				n++
			}
		}
		return n >= 3
	})
	f.completeAuth()
	waitUntil(t, "Connected", func() bool { return c.State().Kind == Connected })
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, s := range r.states {
		if s.Kind == NeedsLogin {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("NeedsLogin reported %d times: %v", n, r.states)
	}
}

// TestHealthMessages: control's Health list and display messages are kept
// as control patches them.
func TestHealthMessages(t *testing.T) {
	f := newFakeControl(t)
	c, _ := connect(t, f, nil)
	if h := c.Health(); len(h) != 0 {
		t.Fatalf("health %q before any message", h)
	}
	f.push <- json.RawMessage(`{"Health":["node is out of date"],"DisplayMessages":{"b":{"Title":"Tailnet lock","Text":"key not signed","Severity":"high"},"a":{"Title":"Renew","Severity":"low","PrimaryAction":{"URL":"https://example.com/r","Label":"Renew"}}}}`)
	waitUntil(t, "health", func() bool { return len(c.Health()) == 3 })
	want := []string{"node is out of date", "Renew (https://example.com/r)", "Tailnet lock: key not signed"}
	if h := c.Health(); !slices.Equal(h, want) {
		t.Fatalf("health %q, want %q", h, want)
	}
	f.push <- json.RawMessage(`{"Domain":"x"}`) // no change
	f.push <- json.RawMessage(`{"DisplayMessages":{"a":null}}`)
	waitUntil(t, "a deleted", func() bool { return len(c.Health()) == 2 })
	f.push <- json.RawMessage(`{"Health":[],"DisplayMessages":{"*":null,"c":{"Title":"C"}}}`)
	waitUntil(t, "cleared", func() bool { return slices.Equal(c.Health(), []string{"C"}) })

	// A new stream restates everything: what it does not repeat is gone.
	f.srv.CloseConns()
	waitUntil(t, "a new stream", func() bool { return len(c.Health()) == 0 })
}

// TestExpiredKeyWithoutAuthKeyNeedsLogin: without an auth key, a node key
// that expires leads to NeedsLogin with a URL for the new key; once the
// user logs in, the new key is used.
func TestExpiredKeyWithoutAuthKeyNeedsLogin(t *testing.T) {
	f := newFakeControl(t)
	var r recorder
	opts := r.options(f)
	c, _ := New(opts)
	run(t, c)
	waitUntil(t, "Connected", func() bool { return c.State().Kind == Connected })
	f.mu.Lock()
	f.interactive = true
	f.completed[opts.NodeKey.NodePublic()] = true
	f.expiredKeys[opts.NodeKey.NodePublic()] = true
	clear(f.known)
	f.checkKnown = true
	f.mu.Unlock()
	f.srv.CloseConns()
	waitUntil(t, "NeedsLogin", func() bool { return c.State().Kind == NeedsLogin })
	if u := c.State().AuthURL; !strings.HasPrefix(u, f.srv.URL+"/a/") {
		t.Fatalf("AuthURL %q", u)
	}
	f.completeAuth()
	waitUntil(t, "Connected with a new key", func() bool {
		return c.State().Kind == Connected && c.NodeKey() != opts.NodeKey
	})
}
