package control

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microlink-go/microlink/internal/h1"
	"github.com/microlink-go/microlink/internal/key"
	"github.com/microlink-go/microlink/internal/tailcfg"
	"github.com/microlink-go/microlink/internal/ts2021/ts2021test"
)

// run starts c.Run and returns a channel with its result.
func run(t *testing.T, c *Client) <-chan error {
	t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- c.Run(context.Background()) }()
	t.Cleanup(func() { c.Close() })
	return errc
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRegisterLiteUpdateAndPoll(t *testing.T) {
	f := newFakeControl(t)
	f.authKey = "tskey-good"
	var r recorder
	opts := r.options(f)
	opts.AuthKey = "tskey-good"
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	disco := key.NewPrivate().DiscoPublic()
	c.SetDiscoKey(disco)
	run(t, c)
	waitUntil(t, "Connected", func() bool { return c.State().Kind == Connected })
	if r.numMaps() != 1 || r.maps[0].Node == nil || r.maps[0].Node.Key != opts.NodeKey.NodePublic() {
		t.Fatalf("maps %+v", r.maps)
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	if got := c.RegisterRequests(); got != uint64(len(f.registers)) || got == 0 {
		t.Errorf("RegisterRequests() = %d, server saw %d", got, len(f.registers))
	}
	reg := f.registers[0]
	if reg.Version != CapabilityVersion || reg.NodeKey != opts.NodeKey.NodePublic() || reg.Auth == nil ||
		reg.Auth.AuthKey != "tskey-good" || reg.Hostinfo == nil || reg.Hostinfo.Hostname != "test" || !reg.OldNodeKey.IsZero() {
		t.Errorf("register request %+v", reg)
	}
	if h := f.regHeaders[0]; h.Get("Content-Type") != "application/json" || h.Get("Ts-Lb") != opts.NodeKey.NodePublic().String() {
		t.Errorf("register headers %v", h)
	}
	if len(f.lites) == 0 {
		t.Fatal("no lite update before the poll")
	}
	lite := f.lites[0]
	if lite.Stream || !lite.OmitPeers || !lite.KeepAlive || lite.DiscoKey != disco || lite.Compress != "zstd" || lite.Version != CapabilityVersion {
		t.Errorf("lite update %+v", lite)
	}
	poll := f.polls[0]
	if !poll.Stream || poll.OmitPeers || !poll.KeepAlive || poll.Compress != "zstd" || poll.NodeKey != opts.NodeKey.NodePublic() {
		t.Errorf("poll %+v", poll)
	}
	if v := f.srv.LastVersion.Load(); v != CapabilityVersion {
		t.Errorf("noise version %d", v)
	}
	if q := f.srv.KeyQuery.Load(); q == nil || *q != "v=115" {
		t.Errorf("/key query %v", q)
	}
}

func TestLiteUpdateOnChange(t *testing.T) {
	f := newFakeControl(t)
	var r recorder
	opts := r.options(f)
	var reportedMu sync.Mutex
	var reportedDERP, reportedEps int
	opts.OnReported = func(derp, eps int) {
		reportedMu.Lock()
		reportedDERP, reportedEps = derp, eps
		reportedMu.Unlock()
	}
	c, _ := New(opts)
	run(t, c)
	waitUntil(t, "Connected", func() bool { return c.State().Kind == Connected })
	ep := []Endpoint{
		{netip.MustParseAddrPort("192.0.2.1:41641"), tailcfg.EndpointSTUN},
		{netip.MustParseAddrPort("[2001:db8::1]:41641"), tailcfg.EndpointLocal},
	}
	c.SetEndpoints(ep)
	c.SetPreferredDERP(7)
	disco := key.NewPrivate().DiscoPublic()
	c.SetDiscoKey(disco)
	f.waitFor("lite update with everything", func() bool {
		l := f.lites[len(f.lites)-1]
		return len(l.Endpoints) == 2 && l.Hostinfo.NetInfo != nil && l.Hostinfo.NetInfo.PreferredDERP == 7 && l.DiscoKey == disco
	})
	f.mu.Lock()
	l := f.lites[len(f.lites)-1]
	f.mu.Unlock()
	if l.Endpoints[1] != ep[1].AddrPort || l.EndpointTypes[0] != tailcfg.EndpointSTUN || l.EndpointTypes[1] != tailcfg.EndpointLocal || !l.OmitPeers || l.Stream {
		t.Fatalf("lite update %+v", l)
	}
	f.mu.Lock()
	polls := len(f.polls)
	f.mu.Unlock()
	if polls != 1 {
		t.Fatalf("lite updates disturbed the poll: %d polls", polls)
	}
	waitUntil(t, "OnReported", func() bool {
		reportedMu.Lock()
		defer reportedMu.Unlock()
		return reportedDERP == 7 && reportedEps == 2
	})
}

func TestWrongAuthKey(t *testing.T) {
	f := newFakeControl(t)
	f.authKey = "tskey-good"
	var r recorder
	opts := r.options(f)
	opts.AuthKey = "tskey-bad"
	c, _ := New(opts)
	errc := run(t, c)
	select {
	case err := <-errc:
		var re *RegisterError
		if !errors.As(err, &re) || !strings.Contains(err.Error(), "invalid authkey") {
			t.Fatalf("Run = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	if s := c.State(); s.Kind != Error {
		t.Fatalf("state %v", s)
	}
}

func TestInteractiveLogin(t *testing.T) {
	f := newFakeControl(t)
	f.interactive = true
	var r recorder
	c, _ := New(r.options(f))
	run(t, c)
	waitUntil(t, "NeedsLogin", func() bool { return c.State().Kind == NeedsLogin })
	url := c.State().AuthURL
	if !strings.HasPrefix(url, f.srv.URL+"/a/") {
		t.Fatalf("AuthURL %q", url)
	}
	f.waitFor("followup", func() bool {
		return len(f.registers) >= 2 && f.registers[len(f.registers)-1].Followup == url
	})
	f.completeAuth()
	waitUntil(t, "Connected", func() bool { return c.State().Kind == Connected })
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.registers[0].NodeKey != f.registers[1].NodeKey {
		t.Fatal("followup used another node key")
	}
}

func TestNodeKeyExpiredRotates(t *testing.T) {
	f := newFakeControl(t)
	var r recorder
	opts := r.options(f)
	old := opts.NodeKey.NodePublic()
	f.expiredKeys[old] = true
	c, _ := New(opts)
	run(t, c)
	waitUntil(t, "Connected", func() bool { return c.State().Kind == Connected })
	f.mu.Lock()
	last := f.registers[len(f.registers)-1]
	nreg := len(f.registers)
	f.mu.Unlock()
	if got := c.RegisterRequests(); got != uint64(nreg) || got < 2 {
		t.Errorf("RegisterRequests() = %d, server saw %d (expected the login and the rotation)", got, nreg)
	}
	if last.OldNodeKey != old || last.NodeKey == old {
		t.Fatalf("rotation request %+v", last)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.nodeKeys) != 1 || r.nodeKeys[0].NodePublic() != last.NodeKey || c.NodeKey() != r.nodeKeys[0] {
		t.Fatalf("OnNodeKey got %v", r.nodeKeys)
	}
}

// TestExpiryWatchRotates: the node key is rotated when the self node's
// expiry comes, also when control's clock stands years in the past (as
// testcontrol's does): such a ControlTime is ignored.
func TestExpiryWatchRotates(t *testing.T) {
	defer func(m, i time.Duration) { expiryMargin, minRotateInterval = m, i }(expiryMargin, minRotateInterval)
	expiryMargin, minRotateInterval = 0, 0
	for _, clock := range []time.Time{{}, time.Date(2020, 8, 3, 0, 0, 0, 0, time.UTC)} {
		f := newFakeControl(t)
		f.controlTime = clock
		f.keyExpiry = time.Now().Add(300 * time.Millisecond)
		var r recorder
		opts := r.options(f)
		c, _ := New(opts)
		run(t, c)
		f.waitFor("re-registration with OldNodeKey", func() bool {
			for _, reg := range f.registers {
				if reg.OldNodeKey == opts.NodeKey.NodePublic() {
					f.keyExpiry = time.Time{}
					return true
				}
			}
			return false
		})
		waitUntil(t, "new key", func() bool { return c.NodeKey() != opts.NodeKey })
		if got := c.Now(); time.Since(got).Abs() > time.Second {
			t.Fatalf("control clock %v: Now() = %v", clock, got)
		}
	}
}

func TestMachineAuthPending(t *testing.T) {
	f := newFakeControl(t)
	f.machineAuth = false
	var r recorder
	c, _ := New(r.options(f))
	run(t, c)
	waitUntil(t, "NeedsMachineAuth and a netmap", func() bool { return c.State().Kind == NeedsMachineAuth && r.numMaps() > 0 })
}

func TestRateLimitHonoured(t *testing.T) {
	f := newFakeControl(t)
	f.rateLimit, f.retryAfter = 1, "1"
	var r recorder
	c, _ := New(r.options(f))
	start := time.Now()
	run(t, c)
	waitUntil(t, "Connected", func() bool { return c.State().Kind == Connected })
	if took := time.Since(start); took < time.Second {
		t.Fatalf("retried after %v, before Retry-After", took)
	}
	var rl *RateLimitError
	if !r.hasState(Error) || !errors.As(r.states[1].Err, &rl) || r.states[0].Kind != Connecting || rl.RetryAfter != time.Second {
		t.Fatalf("states %v", r.states)
	}
}

func TestReconnectAfterDrop(t *testing.T) {
	f := newFakeControl(t)
	var r recorder
	c, _ := New(r.options(f))
	run(t, c)
	waitUntil(t, "Connected", func() bool { return c.State().Kind == Connected })
	f.srv.CloseConns()
	f.waitFor("second poll", func() bool { return len(f.polls) >= 2 })
	waitUntil(t, "second netmap", func() bool { return r.numMaps() >= 2 })
}

func TestWatchdog(t *testing.T) {
	f := newFakeControl(t)
	f.silent = true
	var r recorder
	opts := r.options(f)
	opts.PollTimeout = 200 * time.Millisecond
	c, _ := New(opts)
	run(t, c)
	f.waitFor("poll after watchdog", func() bool { return len(f.polls) >= 2 })
	if n := f.srv.Upgrades.Load(); n < 2 {
		t.Fatalf("watchdog kept the old connection (%d dials)", n)
	}
}

func TestKeepAliveAndPings(t *testing.T) {
	f := newFakeControl(t)
	var heads atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "HEAD" {
			heads.Add(1)
		}
	}))
	defer target.Close()
	var r recorder
	opts := r.options(f)
	opts.HTTPClient = &h1.Client{}
	opts.Pinger = pingerFunc(func(ctx context.Context, ip netip.Addr, typ string) (*tailcfg.PingResponse, error) {
		return &tailcfg.PingResponse{LatencySeconds: 0.5, NodeName: "peer"}, nil
	})
	c, _ := New(opts)
	run(t, c)
	waitUntil(t, "Connected", func() bool { return c.State().Kind == Connected })

	// A keep-alive with a HEAD ping, sent twice: one HEAD, no callback.
	pr := &tailcfg.PingRequest{URL: target.URL + "/ping/1"}
	ct := time.Now().Add(time.Hour)
	f.push <- &tailcfg.MapResponse{KeepAlive: true, PingRequest: pr, ControlTime: &ct}
	f.push <- &tailcfg.MapResponse{KeepAlive: true, PingRequest: pr}
	waitUntil(t, "HEAD", func() bool { return heads.Load() == 1 })

	// c2n echo and a disco ping, both answered over Noise.
	f.push <- &tailcfg.MapResponse{KeepAlive: true, PingRequest: &tailcfg.PingRequest{
		URL: f.srv.URL + "/c2n/echo", URLIsNoise: true, Types: "c2n",
		Payload: []byte("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"),
	}}
	f.push <- &tailcfg.MapResponse{KeepAlive: true, PingRequest: &tailcfg.PingRequest{
		URL: f.srv.URL + "/c2n/disco", URLIsNoise: true, Types: "disco", IP: netip.MustParseAddr("100.64.0.2"),
	}}
	f.waitFor("c2n and disco answers", func() bool { return len(f.c2n) == 2 })
	f.mu.Lock()
	answers := string(f.c2n[0]) + "\n" + string(f.c2n[1])
	f.mu.Unlock()
	if !strings.Contains(answers, "HTTP/1.1 200 OK") || !strings.Contains(answers, "hello") ||
		!strings.Contains(answers, `"Type":"disco"`) || !strings.Contains(answers, `"NodeName":"peer"`) || !strings.Contains(answers, `"IP":"100.64.0.2"`) {
		t.Fatalf("answers:\n%s", answers)
	}
	time.Sleep(50 * time.Millisecond)
	if heads.Load() != 1 {
		t.Fatalf("%d HEADs for a repeated URL", heads.Load())
	}
	if n := r.numMaps(); n != 1 {
		t.Fatalf("%d map callbacks; keep-alives leaked", n)
	}
	c.mu.Lock()
	skew := c.skew
	c.mu.Unlock()
	if skew < 59*time.Minute || skew > 61*time.Minute {
		t.Fatalf("skew %v from ControlTime", skew)
	}
}

type pingerFunc func(ctx context.Context, ip netip.Addr, typ string) (*tailcfg.PingResponse, error)

func (f pingerFunc) Ping(ctx context.Context, ip netip.Addr, typ string) (*tailcfg.PingResponse, error) {
	return f(ctx, ip, typ)
}

func TestLogout(t *testing.T) {
	f := newFakeControl(t)
	var r recorder
	c, _ := New(r.options(f))
	defer c.Close()
	if err := c.Logout(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if got := f.registers[0].Expiry; !got.Equal(time.Unix(123, 0)) {
		t.Fatalf("logout expiry %v", got)
	}
}

func TestCloseStopsEverything(t *testing.T) {
	f := newFakeControl(t)
	var r recorder
	opts := r.options(f)
	// Warm up the server side so its goroutines are in the baseline.
	http.Get(f.srv.URL + "/key?v=1")
	time.Sleep(50 * time.Millisecond)
	base := runtime.NumGoroutine()
	c, _ := New(opts)
	errc := make(chan error, 1)
	go func() { errc <- c.Run(context.Background()) }()
	waitUntil(t, "Connected", func() bool { return c.State().Kind == Connected })
	c.Close()
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("Run = %v", err)
	}
	f.srv.Close()
	ts2021test.WaitGoroutines(t, base)
}

func TestRunStopsOnContext(t *testing.T) {
	f := newFakeControl(t)
	var r recorder
	c, _ := New(r.options(f))
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- c.Run(ctx) }()
	waitUntil(t, "Connected", func() bool { return c.State().Kind == Connected })
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Run = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run ignored cancellation")
	}
}
