package lab

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// ListenTCPIn opens a TCP listener in namespace ns, closed when t ends.
func ListenTCPIn(t T, ns string, addr netip.AddrPort) net.Listener {
	t.Helper()
	var ln net.Listener
	err := Within(ns, func() (err error) {
		ln, err = net.Listen("tcp", addr.String())
		return err
	})
	if err != nil {
		t.Fatalf("listening on %v in %s: %v", addr, ns, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// ListenUDPIn opens a UDP socket in namespace ns, closed when t ends.
func ListenUDPIn(t T, ns string, addr netip.AddrPort) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := Within(ns, func() (err error) {
		c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
		return err
	})
	if err != nil {
		t.Fatalf("UDP socket on %v in %s: %v", addr, ns, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// DialerIn returns a DialContext function that connects from namespace
// ns.
func DialerIn(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := Within(ns, func() (err error) {
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}

// TransferSize is the size of the body ServeHTTP serves at /data.
const TransferSize = 16 << 20

// writeBody writes TransferSize pseudo-random bytes, the same every time.
func writeBody(w io.Writer) error {
	r := rand.NewChaCha8([32]byte{'m', 'l'})
	buf := make([]byte, 64<<10)
	for left := TransferSize; left > 0; left -= len(buf) {
		r.Read(buf)
		if _, err := w.Write(buf[:min(left, len(buf))]); err != nil {
			return err
		}
	}
	return nil
}

// bodySum is the SHA-256 of what writeBody writes.
var bodySum = sync.OnceValue(func() [32]byte {
	h := sha256.New()
	writeBody(h)
	return [32]byte(h.Sum(nil))
})

// ServeHTTP serves on ln, until t ends, TransferSize bytes at /data and
// at /whoami the text "NAME CLIENT-ADDRESS:PORT".
func ServeHTTP(t T, ln net.Listener, name string) {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/data", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(TransferSize))
		writeBody(w)
	})
	mux.HandleFunc("/whoami", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", name, r.RemoteAddr)
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// HTTPClientIn returns an HTTP client whose connections leave from
// namespace ns.
func HTTPClientIn(ns string) *http.Client {
	return &http.Client{
		Transport: &http.Transport{DialContext: DialerIn(ns), DisableKeepAlives: true},
		Timeout:   60 * time.Second,
	}
}

// Fetch gets url (a ServeHTTP server's /data) with client and checks that
// the whole body arrives intact, by its SHA-256.
func Fetch(t T, client *http.Client, url string) {
	t.Helper()
	start := time.Now()
	res, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer res.Body.Close()
	h := sha256.New()
	n, err := io.Copy(h, res.Body)
	if err != nil || n != TransferSize {
		t.Fatalf("GET %s: %d bytes, %v", url, n, err)
	}
	if [32]byte(h.Sum(nil)) != bodySum() {
		t.Fatalf("GET %s: the body's SHA-256 differs", url)
	}
	d := time.Since(start)
	t.Logf("GET %s: %d MiB in %v (%.1f MB/s)", url, n>>20, d.Round(time.Millisecond), float64(n)/d.Seconds()/1e6)
}

// Get returns the body of a small GET.
func Get(client *http.Client, url string) (string, error) {
	res, err := client.Get(url)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return string(b), err
}

// UDPEcho echoes datagrams on c until it is closed.
func UDPEcho(c *net.UDPConn) {
	buf := make([]byte, 2048)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		c.WriteToUDPAddrPort(buf[:n], from)
	}
}

// CheckUDP sends 20 datagrams from c to a UDPEcho server at dst and fails
// t unless at least 15 come back (some may be lost while paths form).
func CheckUDP(t T, c *net.UDPConn, dst netip.AddrPort) {
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

// PingFrom pings dst from namespace ns with the OS ping until a reply
// comes, trying up to tries times, and fails t if none does.
func PingFrom(t T, ns string, dst netip.Addr, tries int) {
	t.Helper()
	var out []byte
	var err error
	for range tries {
		out, err = NetnsCommand(ns, "ping", "-c", "1", "-W", "2", dst.String()).CombinedOutput()
		if err == nil {
			return
		}
	}
	t.Fatalf("ping %v from %s: %v\n%s", dst, ns, err, out)
}

// NoPingFrom fails t if dst answers pings from namespace ns.
func NoPingFrom(t T, ns string, dst netip.Addr) {
	t.Helper()
	if out, err := NetnsCommand(ns, "ping", "-c", "2", "-W", "1", dst.String()).CombinedOutput(); err == nil {
		t.Fatalf("ping %v from %s answered:\n%s", dst, ns, out)
	}
}
