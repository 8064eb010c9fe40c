package tuntest

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"tailscale.com/tailcfg"
	"tailscale.com/tstest/integration/testcontrol"

	"github.com/microlink-go/microlink/interop/lab"
)

const magicDomain = "tail.example"

// netnsResolvConf gives namespace ns a resolv.conf of its own, which "ip
// netns exec" mounts over /etc/resolv.conf for the programs it runs there
// (the daemon among them), and returns its path. The host's own
// resolv.conf is never touched.
func netnsResolvConf(t *testing.T, ns, content string) string {
	t.Helper()
	dir := filepath.Join("/etc/netns", ns)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.RemoveAll(dir)
		os.Remove("/etc/netns") // if no other test uses it
	})
	path := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// ask sends a query for name and typ to server over network ("udp" or
// "tcp") from namespace ns, as a program on that host would, and
// returns the answer summarized as "RCODE value...".
func ask(t *testing.T, ns, network string, server netip.AddrPort, name string, typ dnsmessage.Type) string {
	t.Helper()
	q, err := lab.DNSQuery(0x4d4c, name, typ)
	if err != nil {
		t.Fatal(err)
	}
	dial := lab.DialerIn(ns)
	var resp []byte
	for try := 1; ; try++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err = exchange(ctx, dial, network, server, q)
		cancel()
		if err == nil || try == 3 {
			break
		}
	}
	if err != nil {
		t.Fatalf("%s query for %s to %v: %v", network, name, server, err)
	}
	if len(resp) < 2 || resp[0] != 0x4d || resp[1] != 0x4c {
		t.Fatalf("%s answer for %s from %v with another ID: %x", network, name, server, resp)
	}
	sum, err := lab.DNSSummary(resp)
	if err != nil {
		t.Fatalf("%s answer for %s from %v: %v", network, name, server, err)
	}
	return sum
}

func exchange(ctx context.Context, dial func(context.Context, string, string) (net.Conn, error), network string, server netip.AddrPort, q []byte) ([]byte, error) {
	c, err := dial(ctx, network, server.String())
	if err != nil {
		return nil, err
	}
	defer c.Close()
	dl, _ := ctx.Deadline()
	c.SetDeadline(dl)
	if network == "udp" {
		if _, err := c.Write(q); err != nil {
			return nil, err
		}
		buf := make([]byte, 1500)
		n, err := c.Read(buf)
		return buf[:n], err
	}
	if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(q))), q...)); err != nil {
		return nil, err
	}
	return lab.ReadDNSOverTCP(bufio.NewReader(c))
}

func reverse4(ip netip.Addr) string {
	a := ip.As4()
	return fmt.Sprintf("%d.%d.%d.%d.in-addr.arpa.", a[3], a[2], a[1], a[0])
}

func reverse6(ip netip.Addr) string {
	const hex = "0123456789abcdef"
	a := ip.As16()
	var b strings.Builder
	for i := 15; i >= 0; i-- {
		b.WriteByte(hex[a[i]&0xf])
		b.WriteByte('.')
		b.WriteByte(hex[a[i]>>4])
		b.WriteByte('.')
	}
	return b.String() + "ip6.arpa."
}

// TestTUNMagicDNS: with "microlink up --tun --accept-dns", the host's
// own programs use MagicDNS. Queries from the host to 100.100.100.100 and
// fd7a:115c:a1e0::53, over UDP and TCP, get a real tailscaled peer's
// addresses by its MagicDNS name, an extra record from control, reverse
// lookups of the peer's addresses, and a forwarded name answered by the
// resolver the host's resolv.conf named before; glibc's resolver
// (getent) resolves short names through the tailnet's search domain.
// resolv.conf comes back as it was when the daemon stops, and after a
// SIGKILL when it starts again.
func TestTUNMagicDNS(t *testing.T) {
	needNetwork(t)
	if _, err := os.Stat("/usr/bin/getent"); err != nil {
		t.Skip("needs getent (libc-bin)")
	}
	// The resolver the host used before: in the internet, answering every
	// A query with one address.
	forwarded := netip.MustParseAddr("198.18.200.77")
	lab.SetupInternet(t)
	up := lab.StartDNSServer(t, "", netip.AddrPortFrom(lab.InternetAddr, 53), forwarded)
	l := startLabWith(t, func(s *testcontrol.Server) {
		s.AllOnline = true
		s.MagicDNSDomain = magicDomain
		s.DNSConfig = &tailcfg.DNSConfig{ExtraRecords: []tailcfg.DNSRecord{{Name: "db." + magicDomain, Type: "A", Value: "100.64.99.9"}}}
	})
	tsHost, mlHost := newHost(t, "ts"), newHost(t, "ml")
	orig := "# the host's own\nnameserver " + lab.InternetAddr.String() + "\nsearch lan.example\noptions timeout:2 attempts:2\n"
	rc := netnsResolvConf(t, mlHost.NS, orig)
	ts := l.StartTailscaled(t, lab.TSOptions{Hostname: tsName, TUN: true, Netns: tsHost.NS})
	ml := lab.StartDaemon(t, lab.DaemonOptions{Hostname: mlName, ControlURL: l.ControlURL, AuthKey: l.AuthKey,
		Netns: mlHost.NS, Args: []string{"--tun", "--accept-dns"}})
	waitFor(t, 15*time.Second, "the real peer in microlink's netmap", func() bool {
		st, err := ml.Status()
		_, ok := st.Peer(tsName)
		return err == nil && ok
	})
	rewritten := func() bool { return strings.Contains(readFile(t, rc), "nameserver 100.100.100.100\n") }
	waitFor(t, 10*time.Second, "resolv.conf naming 100.100.100.100", rewritten)
	got := readFile(t, rc)
	for _, want := range []string{"generated by microlink", "\nsearch " + magicDomain + " lan.example\n", "\noptions timeout:2 attempts:2\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("rewritten resolv.conf lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "nameserver "+lab.InternetAddr.String()) {
		t.Errorf("rewritten resolv.conf still names the old resolver:\n%s", got)
	}

	peerName := tsName + "." + magicDomain + "."
	for _, server := range []netip.AddrPort{netip.MustParseAddrPort("100.100.100.100:53"), netip.MustParseAddrPort("[fd7a:115c:a1e0::53]:53")} {
		for _, network := range []string{"udp", "tcp"} {
			before := up.Queries.Load()
			for _, q := range []struct {
				name string
				typ  dnsmessage.Type
				want string
			}{
				{peerName, dnsmessage.TypeA, "RCodeSuccess " + ts.IPv4().String()},
				{peerName, dnsmessage.TypeAAAA, "RCodeSuccess " + ts.IPv6().String()},
				{tsName + ".", dnsmessage.TypeA, "RCodeSuccess " + ts.IPv4().String()},
				{"db." + magicDomain + ".", dnsmessage.TypeA, "RCodeSuccess 100.64.99.9"},
				{"nobody." + magicDomain + ".", dnsmessage.TypeA, "RCodeNameError"},
				{reverse4(ts.IPv4()), dnsmessage.TypePTR, "RCodeSuccess " + peerName},
				{reverse6(ts.IPv6()), dnsmessage.TypePTR, "RCodeSuccess " + peerName},
				{"www.example.net.", dnsmessage.TypeA, "RCodeSuccess " + forwarded.String()},
			} {
				if got := ask(t, mlHost.NS, network, server, q.name, q.typ); got != q.want {
					t.Errorf("%s %v %s %v: %q, want %q", network, server, q.name, q.typ, got, q.want)
				}
			}
			if up.Queries.Load() != before+1 {
				t.Errorf("%s %v: the old resolver got %d queries, want 1", network, server, up.Queries.Load()-before)
			}
		}
	}

	// Programs on the host: glibc's resolver reads the new resolv.conf.
	for name, want := range map[string]string{tsName: ts.IPv4().String(), "db": "100.64.99.9", "www.example.net": forwarded.String()} {
		out := lab.MustRun(t, mlHost.NS, "getent", "ahostsv4", name)
		if !strings.HasPrefix(out, want+" ") {
			t.Errorf("getent ahostsv4 %s on the microlink host:\n%s\nwant %s", name, out, want)
		}
	}

	// A clean stop puts the file back as it was.
	ml.Stop()
	if got := readFile(t, rc); got != orig {
		t.Fatalf("resolv.conf after the daemon stopped:\n%s", got)
	}

	// Killed, the daemon leaves its file; the next start, even without
	// --accept-dns, puts the original back.
	ml.Restart(t)
	waitFor(t, 10*time.Second, "resolv.conf naming 100.100.100.100 again", rewritten)
	ml.Kill()
	if !rewritten() {
		t.Fatalf("resolv.conf after SIGKILL:\n%s", readFile(t, rc))
	}
	ml.Opts.Args = []string{"--tun"}
	ml.Restart(t)
	if got := readFile(t, rc); got != orig {
		t.Fatalf("resolv.conf after the start that followed a SIGKILL:\n%s", got)
	}
	if !strings.Contains(ml.Log(), "restored the host's resolv.conf") {
		t.Errorf("the restart did not say it restored resolv.conf")
	}
	ml.Stop()
	if got := readFile(t, rc); got != orig {
		t.Fatalf("resolv.conf at the end:\n%s", got)
	}
}
