package derptest

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"tailscale.com/derp/derphttp"
	"tailscale.com/derp/derpserver"
	"tailscale.com/net/netmon"
	"tailscale.com/tailcfg"
	tskey "tailscale.com/types/key"

	"github.com/microlink-go/microlink/internal/derp"
	"github.com/microlink-go/microlink/internal/key"
	"github.com/microlink-go/microlink/interop/lab"
)

// relay is a real DERP server behind an httptest TLS server on loopback.
type relay struct {
	t    *testing.T
	srv  *derpserver.Server
	http *httptest.Server
	addr string // host:port
	logf func(string, ...any)

	mu       sync.Mutex
	requests []http.Header // headers of the HTTP requests served
}

// headers returns the headers of the requests served so far.
func (r *relay) headers() []http.Header {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]http.Header(nil), r.requests...)
}

// safeLogf returns a logf that forwards to t.Logf until the test ends;
// the server's goroutines may log after that.
func safeLogf(t *testing.T) func(string, ...any) {
	var mu sync.Mutex
	done := false
	t.Cleanup(func() {
		mu.Lock()
		done = true
		mu.Unlock()
	})
	return func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if !done && testing.Verbose() {
			t.Logf(format, args...)
		}
	}
}

// startRelay starts a DERP server on addr ("127.0.0.1:0" for any port).
func startRelay(t *testing.T, addr string) *relay {
	t.Helper()
	return startRelayWith(t, addr, false)
}

// startRelayWith starts a DERP server on addr; withMetaCert makes its TLS
// chain carry the meta certificate that allows clients a fast start.
func startRelayWith(t *testing.T, addr string, withMetaCert bool) *relay {
	t.Helper()
	var ln net.Listener
	var err error
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		ln, err = net.Listen("tcp", addr)
		if err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{t: t, logf: safeLogf(t)}
	r.srv = derpserver.New(tskey.NewNode(), r.logf)
	h := derpserver.Handler(r.srv)
	r.http = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.requests = append(r.requests, req.Header.Clone())
		r.mu.Unlock()
		h.ServeHTTP(w, req)
	}))
	r.http.Listener.Close()
	r.http.Listener = ln
	r.http.Config.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
	if withMetaCert {
		cert := lab.SelfSignedCert(t)
		r.http.TLS = &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &cert, nil }}
		r.srv.ModifyTLSConfigToAddMetaCert(r.http.TLS)
	}
	r.http.StartTLS()
	r.addr = ln.Addr().String()
	t.Cleanup(r.stop)
	return r
}

// stop closes the server and every connection to it.
func (r *relay) stop() {
	r.srv.Close()
	r.http.Close()
}

func (r *relay) port() int {
	_, p, _ := net.SplitHostPort(r.addr)
	n, _ := strconv.Atoi(p)
	return n
}

// node describes the relay for our client.
func (r *relay) node() derp.Node {
	return derp.Node{Name: "1a", RegionID: 1, HostName: "127.0.0.1", IPv4: "127.0.0.1", IPv6: "none",
		DERPPort: r.port(), InsecureForTests: true}
}

// region describes the relay for the reference client.
func (r *relay) region() *tailcfg.DERPRegion {
	return &tailcfg.DERPRegion{RegionID: 1, RegionCode: "test", Nodes: []*tailcfg.DERPNode{{
		Name: "1a", RegionID: 1, HostName: "127.0.0.1", IPv4: "127.0.0.1", IPv6: "none",
		DERPPort: r.port(), InsecureForTests: true,
	}}}
}

// homeConnections reads the server's count of clients that said it is home.
func (r *relay) homeConnections() int {
	var m map[string]any
	if err := json.Unmarshal([]byte(r.srv.ExpVar(false).String()), &m); err != nil {
		r.t.Fatalf("server expvar: %v", err)
	}
	n, _ := m["gauge_current_home_connections"].(float64)
	return int(n)
}

// dialOurs connects our client to r.
func dialOurs(t *testing.T, r *relay, priv key.Private) *derp.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := derp.Dial(ctx, []derp.Node{r.node()}, derp.Options{PrivateKey: priv})
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	r.waitRegistered(t, tsPublic(t, priv.NodePublic()))
	return c
}

// waitRegistered waits until the server routes packets to k. Clients
// finish their handshake slightly before that.
func (r *relay) waitRegistered(t *testing.T, k tskey.NodePublic) {
	t.Helper()
	if r.srv != nil {
		waitFor(t, "client registered", func() bool { return r.srv.IsClientConnectedForTest(k) })
	}
}

// reference is Tailscale's DERP client connected to a relay.
type reference struct {
	*derphttp.Client
	priv tskey.NodePrivate
}

func dialReference(t *testing.T, r *relay) *reference {
	t.Helper()
	priv := tskey.NewNode()
	reg := r.region()
	c := derphttp.NewRegionClient(priv, r.logf, netmon.NewStatic(), func() *tailcfg.DERPRegion { return reg })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		t.Fatalf("reference Connect: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	r.waitRegistered(t, priv.Public())
	return &reference{c, priv}
}

// key returns the reference client's key in our form.
func (ref *reference) key() key.NodePublic { return key.NodePublic(ref.priv.Public().Raw32()) }

// tsPublic converts our public key to Tailscale's.
func tsPublic(t *testing.T, k key.NodePublic) tskey.NodePublic {
	var out tskey.NodePublic
	if err := out.UnmarshalText([]byte(k.String())); err != nil {
		t.Fatal(err)
	}
	return out
}

// recvAll runs c.Recv in a goroutine and forwards messages, copying
// packets, until c is closed.
func recvAll(c *derp.Client) <-chan derp.Message {
	ch := make(chan derp.Message, 64)
	go func() {
		defer close(ch)
		for {
			m, err := c.Recv()
			if err != nil {
				return
			}
			if rp, ok := m.(*derp.ReceivedPacket); ok {
				m = &derp.ReceivedPacket{Source: rp.Source, Data: append([]byte(nil), rp.Data...)}
			}
			ch <- m
		}
	}()
	return ch
}

// next waits for a message of type T on ch.
func next[T derp.Message](t *testing.T, ch <-chan derp.Message) T {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case m, ok := <-ch:
			if !ok {
				t.Fatalf("connection closed while waiting for %T", *new(T))
			}
			if v, ok := m.(T); ok {
				return v
			}
		case <-timeout:
			var zero T
			t.Fatalf("timed out waiting for %T", zero)
		}
	}
}

// checkGoroutines fails the test if goroutines started after it was
// called are still running at the end.
func checkGoroutines(t *testing.T) func() {
	before := runtime.NumGoroutine()
	return func() {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Errorf("%s", fmt.Sprintf("goroutines leaked: %d before, %d after\n%s", before, n, buf))
		}
	}
}
