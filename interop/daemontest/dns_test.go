package daemontest

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/microlink-go/microlink/interop/lab"
)

// startDNSServer starts an upstream resolver on loopback (UDP and TCP)
// that answers every A query with answer.
func startDNSServer(t *testing.T, answer netip.Addr) *lab.DNSServer {
	t.Helper()
	return lab.StartDNSServer(t, "", netip.MustParseAddrPort("127.0.0.1:0"), answer)
}

func dnsQuery(t *testing.T, id uint16, name string, typ dnsmessage.Type) []byte {
	t.Helper()
	q, err := lab.DNSQuery(id, name, typ)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// dnsAnswer summarizes an answer as "RCODE value value...".
func dnsAnswer(t *testing.T, b []byte) string {
	t.Helper()
	sum, err := lab.DNSSummary(b)
	if err != nil {
		t.Fatalf("answer: %v", err)
	}
	return sum
}

// socks5 opens a SOCKS5 session on proxy and sends a request (CONNECT or
// UDP ASSOCIATE) for dst; it returns the control connection and the bound
// address of the reply.
func socks5(t *testing.T, proxy string, cmd byte, dst netip.AddrPort) (net.Conn, netip.AddrPort) {
	t.Helper()
	c, err := net.Dial("tcp", proxy)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte{5, 1, 0})
	var m [2]byte
	if _, err := io.ReadFull(c, m[:]); err != nil || m != [2]byte{5, 0} {
		t.Fatalf("SOCKS5 method: %v %v", m, err)
	}
	a := dst.Addr().As4()
	req := append([]byte{5, cmd, 0, 1}, a[:]...)
	c.Write(binary.BigEndian.AppendUint16(req, dst.Port()))
	var rep [10]byte
	if _, err := io.ReadFull(c, rep[:]); err != nil {
		t.Fatalf("SOCKS5 reply: %v", err)
	}
	if rep[1] != 0 {
		t.Fatalf("SOCKS5 reply code %d for command %d to %v", rep[1], cmd, dst)
	}
	c.SetDeadline(time.Time{})
	return c, netip.AddrPortFrom(netip.AddrFrom4([4]byte(rep[4:8])), binary.BigEndian.Uint16(rep[8:]))
}

// dnsOverSOCKS sends queries to 100.100.100.100:53 through the daemon's
// SOCKS5 proxy, over UDP (ASSOCIATE) and TCP (CONNECT), and returns each
// answer summarized, UDP first.
func dnsOverSOCKS(t *testing.T, proxy string, name string, typ dnsmessage.Type) (udp, tcp string) {
	t.Helper()
	quad100 := netip.MustParseAddrPort("100.100.100.100:53")
	ctl, relay := socks5(t, proxy, 3, netip.MustParseAddrPort("0.0.0.0:0"))
	defer ctl.Close()
	uc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	hdr := []byte{0, 0, 0, 1, 100, 100, 100, 100, 0, 53}
	buf := make([]byte, 2048)
	for try := 0; ; try++ {
		uc.WriteToUDPAddrPort(append(hdr, dnsQuery(t, 42, name, typ)...), relay)
		uc.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := uc.Read(buf)
		if err == nil {
			if n < 10 || string(buf[:10]) != string(hdr) {
				t.Fatalf("UDP relay header %x", buf[:min(n, 10)])
			}
			udp = dnsAnswer(t, buf[10:n])
			break
		}
		if try == 3 {
			t.Fatalf("no UDP answer for %s: %v", name, err)
		}
	}
	c, _ := socks5(t, proxy, 1, quad100)
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	q := dnsQuery(t, 43, name, typ)
	c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(q))), q...))
	resp, err := lab.ReadDNSOverTCP(c)
	if err != nil {
		t.Fatalf("TCP answer for %s: %v", name, err)
	}
	return udp, dnsAnswer(t, resp)
}

func reverseName(ip netip.Addr) string {
	a := ip.As4()
	return fmt.Sprintf("%d.%d.%d.%d.in-addr.arpa.", a[3], a[2], a[1], a[0])
}
