package control

import (
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"io"
	"net/http"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/microlink-go/microlink/internal/h1"
	"github.com/microlink-go/microlink/internal/key"
	"github.com/microlink-go/microlink/internal/netmap"
	"github.com/microlink-go/microlink/internal/tailcfg"
	"github.com/microlink-go/microlink/internal/ts2021/ts2021test"
)

// fakeControl is a scripted control server behind ts2021test.
type fakeControl struct {
	t   *testing.T
	srv *ts2021test.Server

	mu          sync.Mutex
	authKey     string                  // required auth key, if any
	interactive bool                    // answer with an AuthURL until completed
	completed   map[key.NodePublic]bool // interactive logins done
	authDone    chan struct{}           // closed by completeAuth
	expiredKeys map[key.NodePublic]bool
	machineAuth bool // MachineAuthorized in answers
	rateLimit   int  // answer this many register requests with 429
	retryAfter  string
	keyExpiry   time.Time // self node KeyExpiry
	registers   []*tailcfg.RegisterRequest
	regHeaders  []http.Header
	lites       []*tailcfg.MapRequest
	liteRemotes []string // the connection each lite update came on
	polls       []*tailcfg.MapRequest
	pollRemotes []string
	pollHeaders []http.Header
	c2n         [][]byte
	push        chan any      // extra messages (JSON-encoded) for the live poll
	silent      bool          // send nothing after the first message
	holdPolls   bool          // never answer a poll
	liteDelay   time.Duration // answer lite updates this late
	checkKnown  bool          // answer 404 to map requests of keys not registered
	known       map[key.NodePublic]bool
	mapStatus   int           // answer map requests with this status, if not 0
	controlTime time.Time     // ControlTime of first messages; zero means now
	changed     chan struct{} // pinged on every request
}

func newFakeControl(t *testing.T) *fakeControl {
	f := &fakeControl{
		t:           t,
		completed:   map[key.NodePublic]bool{},
		expiredKeys: map[key.NodePublic]bool{},
		known:       map[key.NodePublic]bool{},
		machineAuth: true,
		push:        make(chan any, 16),
		changed:     make(chan struct{}, 1),
		authDone:    make(chan struct{}),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/machine/register", f.serveRegister)
	mux.HandleFunc("/machine/map", f.serveMap)
	mux.HandleFunc("/c2n/", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.c2n = append(f.c2n, b)
		f.mu.Unlock()
		f.note()
	})
	f.srv = ts2021test.NewServer(t, mux, ts2021test.Options{})
	return f
}

func (f *fakeControl) note() {
	select {
	case f.changed <- struct{}{}:
	default:
	}
}

// waitFor polls cond under f.mu for up to 10 s.
func (f *fakeControl) waitFor(what string, cond func() bool) {
	f.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		f.mu.Lock()
		ok := cond()
		f.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("timed out waiting for %s", what)
		}
		select {
		case <-f.changed:
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (f *fakeControl) completeAuth() {
	f.mu.Lock()
	defer f.mu.Unlock()
	close(f.authDone)
}

func (f *fakeControl) serveRegister(w http.ResponseWriter, r *http.Request) {
	defer f.note()
	var req tailcfg.RegisterRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	f.mu.Lock()
	f.registers = append(f.registers, &req)
	f.regHeaders = append(f.regHeaders, r.Header.Clone())
	if f.rateLimit > 0 {
		f.rateLimit--
		ra := f.retryAfter
		f.mu.Unlock()
		if ra != "" {
			w.Header().Set("Retry-After", ra)
		}
		http.Error(w, "slow down", http.StatusTooManyRequests)
		return
	}
	var resp tailcfg.RegisterResponse
	switch {
	case f.authKey != "" && (req.Auth == nil || req.Auth.AuthKey != f.authKey):
		resp.Error = "invalid authkey"
	case f.expiredKeys[req.NodeKey]:
		resp.NodeKeyExpired = true
	case f.interactive && !f.completed[req.NodeKey]:
		if req.Followup == "" {
			resp.AuthURL = f.srv.URL + "/a/" + req.NodeKey.ShortString()
			break
		}
		done := f.authDone
		f.mu.Unlock()
		select {
		case <-done:
		case <-r.Context().Done():
			return
		}
		f.mu.Lock()
		f.completed[req.NodeKey] = true
	}
	resp.MachineAuthorized = f.machineAuth
	if resp.Error == "" && resp.AuthURL == "" && !resp.NodeKeyExpired {
		f.known[req.NodeKey] = true
	}
	f.mu.Unlock()
	json.NewEncoder(w).Encode(resp)
}

func (f *fakeControl) selfNode(nk key.NodePublic) *tailcfg.Node {
	return &tailcfg.Node{
		ID: 1, Key: nk, Name: "self.", MachineAuthorized: f.machineAuth,
		KeyExpiry: f.keyExpiry,
		Addresses: []netip.Prefix{netip.MustParsePrefix("100.64.0.1/32")},
	}
}

func (f *fakeControl) serveMap(w http.ResponseWriter, r *http.Request) {
	defer f.note()
	var req tailcfg.MapRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	f.mu.Lock()
	if f.checkKnown && !f.known[req.NodeKey] {
		f.mu.Unlock()
		http.Error(w, "node not found", http.StatusNotFound)
		return
	}
	if st := f.mapStatus; st != 0 {
		f.mu.Unlock()
		http.Error(w, "trouble", st)
		return
	}
	if !req.Stream {
		delay := f.liteDelay
		f.mu.Unlock()
		time.Sleep(delay)
		f.mu.Lock()
		f.lites = append(f.lites, &req)
		f.liteRemotes = append(f.liteRemotes, r.RemoteAddr)
		f.mu.Unlock()
		return
	}
	f.polls = append(f.polls, &req)
	f.pollRemotes = append(f.pollRemotes, r.RemoteAddr)
	f.pollHeaders = append(f.pollHeaders, r.Header.Clone())
	now := time.Now()
	if !f.controlTime.IsZero() {
		now = f.controlTime
	}
	first := &tailcfg.MapResponse{Node: f.selfNode(req.NodeKey), ControlTime: &now}
	silent, hold := f.silent, f.holdPolls
	f.mu.Unlock()
	if hold {
		<-r.Context().Done()
		return
	}

	enc, _ := zstd.NewWriter(nil)
	defer enc.Close()
	send := func(m any) bool {
		b, _ := json.Marshal(m)
		if req.Compress == "zstd" {
			b = enc.EncodeAll(b, nil)
		}
		var hdr [4]byte
		binary.LittleEndian.PutUint32(hdr[:], uint32(len(b)))
		if _, err := w.Write(append(hdr[:], b...)); err != nil {
			return false
		}
		w.(http.Flusher).Flush()
		return true
	}
	if !send(first) {
		return
	}
	if silent {
		<-r.Context().Done()
		return
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case m := <-f.push:
			if !send(m) {
				return
			}
		}
	}
}

// recorder collects callbacks.
type recorder struct {
	mu       sync.Mutex
	states   []State
	maps     []*netmap.Message
	nodeKeys []key.Private
}

func (r *recorder) options(f *fakeControl) Options {
	return Options{
		ServerURL:  f.srv.URL,
		MachineKey: key.NewPrivate(),
		NodeKey:    key.NewPrivate(),
		HTTPClient: httpClient(f.srv.HTTP.Certificate()),
		Hostinfo:   &tailcfg.Hostinfo{Hostname: "test", OS: "linux", IPNVersion: "test"},
		OnState: func(s State) {
			r.mu.Lock()
			r.states = append(r.states, s)
			r.mu.Unlock()
		},
		OnMapResponse: func(m *netmap.Message) {
			r.mu.Lock()
			r.maps = append(r.maps, m)
			r.mu.Unlock()
		},
		OnNodeKey: func(k key.Private) {
			r.mu.Lock()
			r.nodeKeys = append(r.nodeKeys, k)
			r.mu.Unlock()
		},
	}
}

func (r *recorder) hasState(k Kind) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.states {
		if s.Kind == k {
			return true
		}
	}
	return false
}

func (r *recorder) numMaps() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.maps)
}

// httpClient trusts cert, if not nil.
func httpClient(cert *x509.Certificate) *h1.Client {
	hc := &h1.Client{}
	if cert != nil {
		hc.RootCAs = x509.NewCertPool()
		hc.RootCAs.AddCert(cert)
	}
	return hc
}
