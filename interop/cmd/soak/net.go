package main

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"tailscale.com/derp/derpserver"
	"tailscale.com/types/key"
)

// serverAddr is where the lab's servers listen, on the loopback of the
// program's own namespace (the internet).
var serverAddr = netip.MustParseAddr("198.18.0.1")

func sh(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// setupInternet puts the servers' address on loopback and turns on
// forwarding between the hosts' links.
func setupInternet() error {
	if err := sh("ip", "addr", "add", serverAddr.String()+"/32", "dev", "lo"); err != nil {
		return err
	}
	return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644)
}

// host is a namespace on the internet: a veth pair, 198.18.N.x/24 on its
// side, 198.18.N.1 on the internet's.
type host struct {
	NS   string
	n    int
	Addr netip.Addr
}

func newHost(name string, n int) (*host, error) {
	h := &host{NS: name, n: n, Addr: netip.AddrFrom4([4]byte{198, 18, byte(n), 2})}
	inet := fmt.Sprintf("i%d", n)
	for _, c := range [][]string{
		{"netns", "add", h.NS},
		{"-n", h.NS, "link", "set", "lo", "up"},
		{"link", "add", inet, "type", "veth", "peer", "name", "eth0", "netns", h.NS},
		{"addr", "add", fmt.Sprintf("198.18.%d.1/24", n), "dev", inet},
		{"link", "set", inet, "up"},
		{"-n", h.NS, "addr", "add", h.Addr.String() + "/24", "dev", "eth0"},
		{"-n", h.NS, "link", "set", "eth0", "up"},
		{"-n", h.NS, "route", "add", "default", "via", fmt.Sprintf("198.18.%d.1", n)},
	} {
		if err := sh("ip", c...); err != nil {
			return nil, err
		}
	}
	return h, nil
}

func (h *host) remove() { exec.Command("ip", "netns", "delete", h.NS).Run() }

// renumber moves the host to 198.18.N.last in one burst, as a DHCP client
// does: old address (and default route) out, new address and route in.
func (h *host) renumber(last byte) error {
	old := h.Addr
	next := netip.AddrFrom4([4]byte{198, 18, byte(h.n), last})
	cmd := exec.Command("ip", "-n", h.NS, "-batch", "-")
	cmd.Stdin = strings.NewReader(fmt.Sprintf("addr del %s/24 dev eth0\naddr add %s/24 dev eth0\nroute add default via 198.18.%d.1\n",
		old, next, h.n))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("renumbering %s: %v: %s", h.NS, err, out)
	}
	h.Addr = next
	return nil
}

const cutTable = "soak_cut"

// cutUDP drops UDP forwarded between the two hosts' networks, leaving
// STUN, DERP and control (served by the internet itself) alone.
func cutUDP(a, b *host) error {
	script := fmt.Sprintf(`table inet %s {
	chain forward {
		type filter hook forward priority filter; policy accept;
		ip saddr { 198.18.%[2]d.0/24, 198.18.%[3]d.0/24 } ip daddr { 198.18.%[2]d.0/24, 198.18.%[3]d.0/24 } meta l4proto udp counter drop
	}
}
`, cutTable, a.n, b.n)
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft: %v: %s", err, out)
	}
	return nil
}

func liftCut() error { return sh("nft", "delete", "table", "inet", cutTable) }

// relay is a DERP server that can be restarted on the same address with
// the same key, losing its connections and state as a restarted derper
// does.
type relay struct {
	key  key.NodePrivate
	addr string // host:port, fixed after the first start
	logf func(string, ...any)

	mu  sync.Mutex
	srv *httptest.Server
	d   *derpserver.Server
}

func (r *relay) start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := derpserver.New(r.key, r.logf)
	mux := http.NewServeMux()
	mux.Handle("/derp", derpserver.Handler(d))
	mux.HandleFunc("/derp/probe", derpserver.ProbeHandler)
	mux.HandleFunc("/derp/latency-check", derpserver.ProbeHandler)
	mux.HandleFunc("/generate_204", derpserver.ServeNoContent)
	srv := httptest.NewUnstartedServer(mux)
	var ln net.Listener
	var err error
	for range 50 { // the port may linger a moment after a stop
		if ln, err = net.Listen("tcp", r.addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		d.Close()
		return fmt.Errorf("DERP listener: %w", err)
	}
	srv.Listener.Close()
	srv.Listener = ln
	srv.Config.ErrorLog = log.New(logWriter(r.logf), "derp http: ", 0)
	srv.Config.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
	srv.StartTLS()
	r.addr = ln.Addr().String()
	r.srv, r.d = srv, d
	return nil
}

func (r *relay) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.srv == nil {
		return
	}
	r.srv.CloseClientConnections()
	r.srv.Close()
	r.d.Close()
	r.srv, r.d = nil, nil
}

// connected reports whether the node with key k is connected.
func (r *relay) connected(k key.NodePublic) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.d != nil && r.d.IsClientConnectedForTest(k)
}

func (r *relay) port() int {
	_, p, _ := net.SplitHostPort(r.addr)
	var n int
	fmt.Sscan(p, &n)
	return n
}

type logWriter func(string, ...any)

func (w logWriter) Write(p []byte) (int, error) {
	w("%s", bytes.TrimRight(p, "\n"))
	return len(p), nil
}
