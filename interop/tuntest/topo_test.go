package tuntest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microlink-go/microlink/interop/lab"
)

// serverAddr is where the lab's servers listen: the internet.
var serverAddr = netip.MustParseAddr("198.18.0.1")

var (
	internetOnce sync.Once
	internetErr  error
	hostSeq      atomic.Int32 // numbers hosts: 198.18.N.0/24
	lanSeq       atomic.Int32 // numbers LANs: 198.19.N.0/24
)

// setupInternet makes the test's own namespace the internet.
func setupInternet(t testing.TB) {
	t.Helper()
	internetOnce.Do(func() {
		out, err := lab.NetnsCommand("", "ip", "addr", "add", serverAddr.String()+"/32", "dev", "lo").CombinedOutput()
		if err != nil && !bytes.Contains(out, []byte("exists")) {
			internetErr = fmt.Errorf("ip addr add %v dev lo: %v: %s", serverAddr, err, out)
			return
		}
		internetErr = os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644)
	})
	if internetErr != nil {
		t.Fatal(internetErr)
	}
}

// host is a namespace on the internet.
type host struct {
	NS   string
	Addr netip.Addr // 198.18.N.2 on eth0
}

// newHost creates a namespace joined to the internet.
func newHost(t testing.TB, label string) *host {
	t.Helper()
	setupInternet(t)
	n := int(hostSeq.Add(1))
	h := &host{NS: lab.NewNetns(t, label), Addr: netip.AddrFrom4([4]byte{198, 18, byte(n), 2})}
	gw := netip.AddrFrom4([4]byte{198, 18, byte(n), 1})
	lab.Veth(t, "", fmt.Sprintf("i%d", n), netip.PrefixFrom(gw, 24), h.NS, "eth0", netip.PrefixFrom(h.Addr, 24))
	lab.MustRun(t, h.NS, "ip", "route", "add", "default", "via", gw.String())
	return h
}

// lan is a network behind a router namespace: the router's interface
// lan0 holds 198.19.N.1, and each LAN host 198.19.N.(1+i).
type lan struct {
	Prefix netip.Prefix
	Router string // namespace
	hosts  int
}

// newLAN attaches a LAN to the router namespace.
func newLAN(t testing.TB, router string) *lan {
	t.Helper()
	n := int(lanSeq.Add(1))
	return &lan{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 19, byte(n), 0}), 24), Router: router}
}

func (l *lan) gateway() netip.Addr { return l.Prefix.Addr().Next() }

// newHost adds a host namespace to the LAN. It has no routes beyond the
// LAN's own: tests add what they need.
func (l *lan) newHost(t testing.TB, label string) *host {
	t.Helper()
	l.hosts++
	h := &host{NS: lab.NewNetns(t, label)}
	h.Addr = l.gateway()
	for range l.hosts {
		h.Addr = h.Addr.Next()
	}
	ifName := fmt.Sprintf("lan%d", l.hosts-1)
	lab.Veth(t, l.Router, ifName, netip.PrefixFrom(l.gateway(), 24), h.NS, "eth0", netip.PrefixFrom(h.Addr, 24))
	if l.hosts > 1 {
		t.Fatal("one host per LAN")
	}
	return h
}

// startLab starts the lab's servers on the internet address. Their logs
// are kept and printed only if the test fails.
func startLab(t testing.TB) *lab.Lab {
	t.Helper()
	setupInternet(t)
	var mu sync.Mutex
	var logs strings.Builder
	t.Cleanup(func() {
		if t.Failed() {
			mu.Lock()
			t.Logf("lab log (tail):\n%s", tail(logs.String(), 80))
			mu.Unlock()
		}
	})
	return lab.Start(t, lab.Options{
		ListenAddr: serverAddr,
		Logf: func(format string, args ...any) {
			mu.Lock()
			fmt.Fprintf(&logs, format+"\n", args...)
			mu.Unlock()
		},
	})
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// waitFor polls cond until it holds or d passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	lab.WaitFor(t, d, what, cond)
}

// pingFrom pings dst from namespace ns with the OS ping until one reply
// comes (up to tries attempts), and fails t if none does.
func pingFrom(t testing.TB, ns string, dst netip.Addr, tries int) {
	t.Helper()
	var out []byte
	var err error
	for range tries {
		out, err = lab.NetnsCommand(ns, "ping", "-c", "1", "-W", "2", dst.String()).CombinedOutput()
		if err == nil {
			return
		}
	}
	t.Fatalf("ping %v from %s: %v\n%s", dst, ns, err, out)
}

// noPingFrom checks that dst does not answer pings from ns.
func noPingFrom(t testing.TB, ns string, dst netip.Addr) {
	t.Helper()
	if out, err := lab.NetnsCommand(ns, "ping", "-c", "2", "-W", "1", dst.String()).CombinedOutput(); err == nil {
		t.Fatalf("ping %v from %s answered:\n%s", dst, ns, out)
	}
}

// listenIn opens a TCP listener in namespace ns.
func listenIn(t testing.TB, ns string, addr netip.AddrPort) net.Listener {
	t.Helper()
	var ln net.Listener
	err := lab.Within(ns, func() (err error) {
		ln, err = net.Listen("tcp", addr.String())
		return err
	})
	if err != nil {
		t.Fatalf("listening on %v in %s: %v", addr, ns, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// listenUDPIn opens a UDP socket in namespace ns.
func listenUDPIn(t testing.TB, ns string, addr netip.AddrPort) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := lab.Within(ns, func() (err error) {
		c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
		return err
	})
	if err != nil {
		t.Fatalf("UDP socket on %v in %s: %v", addr, ns, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// dialerIn returns a DialContext function that connects from namespace
// ns.
func dialerIn(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := lab.Within(ns, func() (err error) {
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}

// transferSize is the size of the HTTP transfers.
const transferSize = 16 << 20

// body writes transferSize pseudo-random bytes, the same every time.
func body(w io.Writer) error {
	r := rand.NewChaCha8([32]byte{'m', 'l'})
	buf := make([]byte, 64<<10)
	for left := transferSize; left > 0; left -= len(buf) {
		r.Read(buf)
		if _, err := w.Write(buf[:min(left, len(buf))]); err != nil {
			return err
		}
	}
	return nil
}

// bodySum is the SHA-256 of what body writes.
var bodySum = sync.OnceValue(func() [32]byte {
	h := sha256.New()
	body(h)
	return [32]byte(h.Sum(nil))
})

// serveHTTP serves, on ln, the test body at /data and the client's
// address at /whoami, until the test ends.
func serveHTTP(t testing.TB, ln net.Listener, name string) {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/data", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(transferSize))
		body(w)
	})
	mux.HandleFunc("/whoami", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", name, r.RemoteAddr)
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// httpClientIn returns an HTTP client whose connections leave from ns.
func httpClientIn(ns string) *http.Client {
	return &http.Client{
		Transport: &http.Transport{DialContext: dialerIn(ns), DisableKeepAlives: true},
		Timeout:   60 * time.Second,
	}
}

// fetch gets url with client and checks that the 16 MiB body arrives
// intact.
func fetch(t testing.TB, client *http.Client, url string) {
	t.Helper()
	start := time.Now()
	res, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer res.Body.Close()
	h := sha256.New()
	n, err := io.Copy(h, res.Body)
	if err != nil || n != transferSize {
		t.Fatalf("GET %s: %d bytes, %v", url, n, err)
	}
	if [32]byte(h.Sum(nil)) != bodySum() {
		t.Fatalf("GET %s: the body's SHA-256 differs", url)
	}
	d := time.Since(start)
	t.Logf("GET %s: %d MiB in %v (%.1f MB/s)", url, n>>20, d.Round(time.Millisecond), float64(n)/d.Seconds()/1e6)
}

// get returns the body of a small GET.
func get(client *http.Client, url string) (string, error) {
	res, err := client.Get(url)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return string(b), err
}

// udpEcho echoes datagrams on c until it is closed.
func udpEcho(c *net.UDPConn) {
	buf := make([]byte, 2048)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		c.WriteToUDPAddrPort(buf[:n], from)
	}
}

// checkUDP sends datagrams from c to an echo server at dst and checks
// that they come back, allowing for a few lost while paths form.
func checkUDP(t testing.TB, c *net.UDPConn, dst netip.AddrPort) {
	t.Helper()
	buf := make([]byte, 2048)
	got := 0
	for i := range 20 {
		msg := fmt.Sprintf("datagram %d to %v", i, dst)
		if _, err := c.WriteToUDPAddrPort([]byte(msg), dst); err != nil {
			t.Fatalf("UDP send to %v: %v", dst, err)
		}
		c.SetReadDeadline(time.Now().Add(time.Second))
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err == nil && string(buf[:n]) == msg && from.Addr().Unmap() == dst.Addr() {
			got++
		}
	}
	if got < 15 {
		t.Fatalf("UDP echo through %v: %d of 20 came back", dst, got)
	}
}

func addrs(st lab.CLIStatus) (v4, v6 netip.Addr) {
	for _, s := range st.Self.Addresses {
		a := netip.MustParseAddr(s)
		if a.Is4() {
			v4 = a
		} else {
			v6 = a
		}
	}
	return v4, v6
}
