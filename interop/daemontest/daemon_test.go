package daemontest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"tailscale.com/tailcfg"
	"tailscale.com/tstest/integration/testcontrol"
	"tailscale.com/types/dnstype"

	"github.com/microlink-go/microlink/interop/lab"
)

const magicDomain = "tail.example"

// world is a lab with MagicDNS, a real tailscaled in TUN mode serving
// HTTP on its tailnet address, and upstream resolvers for forwarding.
type world struct {
	l               *lab.Lab
	ts              *lab.Tailscaled
	dnsDef, dnsCorp *lab.DNSServer
}

func startWorld(t *testing.T) *world {
	t.Helper()
	if err := lab.TUNAvailable(); err != nil {
		t.Skip(err)
	}
	w := &world{
		dnsDef:  startDNSServer(t, netip.MustParseAddr("192.0.2.1")),
		dnsCorp: startDNSServer(t, netip.MustParseAddr("192.0.2.2")),
	}
	w.l = lab.Start(t, lab.Options{ConfigureControl: func(s *testcontrol.Server) {
		s.AllOnline = true
		s.MagicDNSDomain = magicDomain
		s.TagOwners = map[string][]string{"tag:svc": nil}
		s.DNSConfig = &tailcfg.DNSConfig{
			Resolvers: []*dnstype.Resolver{{Addr: w.dnsDef.Addr.String()}},
			Routes:    map[string][]*dnstype.Resolver{"corp.example.": {{Addr: w.dnsCorp.Addr.String()}}},
			ExtraRecords: []tailcfg.DNSRecord{
				{Name: "db." + magicDomain, Type: "A", Value: "100.64.99.9"},
				{Name: "printer.office.example", Value: "100.64.99.10"},
			},
		}
	}})
	// --accept-dns=false: the real peer must not touch the host's
	// resolv.conf, which this namespace shares.
	w.ts = w.l.StartTailscaled(t, lab.TSOptions{Hostname: "real-peer", TUN: true, UpArgs: []string{"--accept-dns=false"}})
	ln, err := net.Listen("tcp", net.JoinHostPort(w.ts.IPv4().String(), "8081"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(rw, "hello from real-peer: %s %s\n", r.Method, r.URL.Path)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return w
}

func curl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "curl", append([]string{"-sS", "--max-time", "15", "--noproxy", ""}, args...)...).CombinedOutput()
	return string(out), err
}

// TestDaemon runs one daemon with every host service on and checks each
// in turn against the real peer.
func TestDaemon(t *testing.T) {
	w := startWorld(t)
	d := startDaemon(t, w.l, "ml-daemon", "--advertise-tags", "tag:svc",
		"--socks5-server", "127.0.0.1:0", "--outbound-http-proxy-listen", "127.0.0.1:0",
		"--web-listen", "127.0.0.1:0", "--web-token", "tok")
	socks := d.listenAddr(t, "SOCKS5 proxy listening", "addr")
	httpProxy := d.listenAddr(t, "HTTP proxy listening", "addr")
	webURL := d.listenAddr(t, "status page listening", "url")
	st := d.status(t)
	mlIP := st.TailscaleIPs[0]
	waitFor(t, 15*time.Second, "the real peer in microlink's netmap", func() bool { return len(d.status(t).Peer) == 1 })
	if _, err := w.ts.WaitPeer(testCtx(t, 15*time.Second), "ml-daemon"); err != nil {
		t.Fatal(err)
	}

	t.Run("version", func(t *testing.T) {
		b, err := exec.Command(d.bin, "version").CombinedOutput()
		if out := string(b); err != nil || out != "microlink "+testVersion+"\n" {
			t.Fatalf("version: %q %v", b, err)
		}
		var hi *tailcfg.Hostinfo
		for _, n := range w.l.Control.AllNodes() {
			if n.Hostinfo.Hostname() == "ml-daemon" {
				hi = n.Hostinfo.AsStruct()
			}
		}
		if hi == nil || hi.IPNVersion != testVersion || !slices.Equal(hi.RequestTags, []string{"tag:svc"}) || hi.ShieldsUp {
			t.Fatalf("control got Hostinfo %+v", hi)
		}
		if !slices.Equal(st.Self.Tags, []string{"tag:svc"}) {
			t.Errorf("status Self.Tags %q", st.Self.Tags)
		}
	})

	t.Run("status script", func(t *testing.T) {
		run := func(statusJSON []byte) string {
			cmd := exec.Command("python3", "testdata/tsstatus.py")
			cmd.Stdin = strings.NewReader(string(statusJSON))
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("script: %v\n%s\ninput:\n%s", err, out, statusJSON)
			}
			return string(out)
		}
		tsOut, err := w.ts.CLI(testCtx(t, 10*time.Second), "status", "--json")
		if err != nil {
			t.Fatal(err)
		}
		fromTS := run(tsOut)
		mlOut, err := d.cli("status", "--json")
		if err != nil {
			t.Fatal(err)
		}
		fromML := run([]byte(mlOut))
		t.Logf("script on tailscale's status:\n%s\nscript on microlink's status:\n%s", fromTS, fromML)
		for _, want := range []string{"state Running\n", "self real-peer real-peer." + magicDomain + ". " + w.ts.IPv4().String(), "peer ml-daemon ml-daemon." + magicDomain + ". " + mlIP + " online "} {
			if !strings.Contains(fromTS, want) {
				t.Errorf("script on tailscale's status lacks %q", want)
			}
		}
		for _, want := range []string{"state Running\n", "self ml-daemon ml-daemon." + magicDomain + ". " + mlIP, "peer real-peer real-peer." + magicDomain + ". " + w.ts.IPv4().String() + " online ", "exit=False"} {
			if !strings.Contains(fromML, want) {
				t.Errorf("script on microlink's status lacks %q", want)
			}
		}
	})

	t.Run("ip", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"ip", "-4"}, mlIP + "\n"},
			{[]string{"ip", "-4", "real-peer"}, w.ts.IPv4().String() + "\n"},
			{[]string{"ip", "-6", "real-peer." + magicDomain}, w.ts.IPv6().String() + "\n"},
			{[]string{"ip", "real-peer"}, w.ts.IPv4().String() + "\n" + w.ts.IPv6().String() + "\n"},
		} {
			if out, err := d.cli(tc.args...); err != nil || out != tc.want {
				t.Errorf("%v: %q %v, want %q", tc.args, out, err, tc.want)
			}
		}
		if out, err := d.cli("ip", "nobody"); err == nil {
			t.Errorf("ip of an unknown peer: %q", out)
		}
	})

	t.Run("whois", func(t *testing.T) {
		out, err := d.cli("whois", w.ts.IPv4().String())
		if err != nil || !strings.Contains(out, "real-peer."+magicDomain) || !strings.Contains(out, "@") || !strings.Contains(out, w.ts.IPv6().String()) {
			t.Fatalf("whois: %v\n%s", err, out)
		}
		out, err = d.cli("whois", "--json", net.JoinHostPort(w.ts.IPv4().String(), "443"))
		var wj struct {
			Node        struct{ Name, HostName string }
			UserProfile struct{ LoginName string }
		}
		if err != nil || json.Unmarshal([]byte(out), &wj) != nil || wj.Node.HostName != "real-peer" || wj.UserProfile.LoginName == "" {
			t.Fatalf("whois --json: %v\n%s", err, out)
		}
		// The real peer's whois of microlink shows the tag control gave it.
		tsOut, err := w.ts.CLI(testCtx(t, 10*time.Second), "whois", mlIP)
		if err != nil || !strings.Contains(string(tsOut), "tag:svc") {
			t.Errorf("tailscale whois %s: %v\n%s", mlIP, err, tsOut)
		}
		if out, err := d.cli("whois", "100.64.250.250"); err == nil {
			t.Errorf("whois of nobody: %s", out)
		}
	})

	t.Run("proxies", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			args []string
		}{
			{"socks5-hostname short name", []string{"--socks5-hostname", socks, "http://real-peer:8081/short"}},
			{"socks5-hostname FQDN", []string{"--socks5-hostname", socks, "http://real-peer." + magicDomain + ":8081/fqdn"}},
			{"socks5 by IP", []string{"--socks5", socks, "http://" + w.ts.IPv4().String() + ":8081/ip"}},
			{"http proxy", []string{"--proxy", "http://" + httpProxy, "http://real-peer:8081/proxied"}},
			{"http proxy CONNECT", []string{"--proxytunnel", "--proxy", "http://" + httpProxy, "http://real-peer:8081/tunnel"}},
			{"http proxy POST", []string{"--proxy", "http://" + httpProxy, "--data-binary", "@/dev/null", "http://real-peer." + magicDomain + ":8081/post"}},
		} {
			out, err := curl(t, tc.args...)
			path := tc.args[len(tc.args)-1]
			path = path[strings.LastIndex(path, "/"):]
			method := "GET"
			if tc.name == "http proxy POST" {
				method = "POST"
			}
			if err != nil || out != "hello from real-peer: "+method+" "+path+"\n" {
				t.Errorf("%s: %v\n%s", tc.name, err, out)
			}
		}
		// Addresses outside the tailnet are reached through the host's
		// network, as with tailscaled's proxies.
		hostLn, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		hostSrv := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) { io.WriteString(rw, "host service\n") })}
		go hostSrv.Serve(hostLn)
		defer hostSrv.Close()
		for _, args := range [][]string{{"--socks5-hostname", socks}, {"--proxy", "http://" + httpProxy}} {
			if out, err := curl(t, append(args, "http://"+hostLn.Addr().String()+"/")...); err != nil || out != "host service\n" {
				t.Errorf("%v to a host address: %v %q", args, err, out)
			}
		}
		// A name nobody knows fails cleanly.
		if out, err := curl(t, "--socks5-hostname", socks, "http://nobody."+magicDomain+":8081/"); err == nil {
			t.Errorf("unknown name through SOCKS5: %s", out)
		}
		if out, _ := curl(t, "-o", "/dev/null", "-w", "%{http_code}", "--proxy", "http://"+httpProxy, "http://nobody."+magicDomain+":8081/"); out != "502" {
			t.Errorf("unknown name through the HTTP proxy: %s", out)
		}
	})

	t.Run("dns", func(t *testing.T) {
		ptr := reverseName(w.ts.IPv4())
		for _, tc := range []struct {
			name string
			typ  dnsmessage.Type
			want string
		}{
			{"real-peer." + magicDomain + ".", dnsmessage.TypeA, "RCodeSuccess " + w.ts.IPv4().String()},
			{"REAL-PEER." + magicDomain + ".", dnsmessage.TypeAAAA, "RCodeSuccess " + w.ts.IPv6().String()},
			{"real-peer.", dnsmessage.TypeA, "RCodeSuccess " + w.ts.IPv4().String()},
			{"ml-daemon." + magicDomain + ".", dnsmessage.TypeA, "RCodeSuccess " + mlIP},
			{"db." + magicDomain + ".", dnsmessage.TypeA, "RCodeSuccess 100.64.99.9"},
			{"printer.office.example.", dnsmessage.TypeA, "RCodeSuccess 100.64.99.10"},
			{"nobody." + magicDomain + ".", dnsmessage.TypeA, "RCodeNameError"},
			{ptr, dnsmessage.TypePTR, "RCodeSuccess real-peer." + magicDomain + "."},
			{"git.corp.example.", dnsmessage.TypeA, "RCodeSuccess 192.0.2.2"},
			{"www.example.org.", dnsmessage.TypeA, "RCodeSuccess 192.0.2.1"},
		} {
			udp, tcp := dnsOverSOCKS(t, socks, tc.name, tc.typ)
			if udp != tc.want || tcp != tc.want {
				t.Errorf("%s %v: UDP %q, TCP %q, want %q", tc.name, tc.typ, udp, tcp, tc.want)
			}
		}
		// Peers cannot use the resolver: a query to the node's tailnet
		// address from the real peer gets no DNS answer.
		pc, err := net.Dial("udp", net.JoinHostPort(mlIP, "53"))
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 3; i++ {
			pc.Write(dnsQuery(t, 9, "real-peer.", dnsmessage.TypeA))
		}
		pc.SetReadDeadline(time.Now().Add(time.Second))
		if n, err := pc.Read(make([]byte, 512)); err == nil {
			t.Errorf("a peer got a %d-byte answer from the node's port 53", n)
		}
		pc.Close()
		got := map[string]bool{}
		for len(w.dnsCorp.Names) > 0 {
			got["corp "+<-w.dnsCorp.Names] = true
		}
		for len(w.dnsDef.Names) > 0 {
			got["default "+<-w.dnsDef.Names] = true
		}
		if !got["corp git.corp.example."] || !got["default www.example.org."] || got["default git.corp.example."] || got["corp www.example.org."] {
			t.Errorf("upstream queries: %v", got)
		}
	})

	t.Run("bad input", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(1, 2))
		junk := func() []byte {
			b := make([]byte, 1+rng.IntN(300))
			for i := range b {
				b[i] = byte(rng.Uint32())
			}
			return b
		}
		send := func(addr string, b []byte) {
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				t.Fatalf("dial %s: %v", addr, err)
			}
			c.SetDeadline(time.Now().Add(3 * time.Second))
			c.Write(b)
			c.(*net.TCPConn).CloseWrite() // the server sees the end at once
			io.Copy(io.Discard, c)
			c.Close()
		}
		webHost := strings.TrimSuffix(strings.TrimPrefix(webURL, "http://"), "/")
		for i := 0; i < 30; i++ {
			send(socks, junk())
			send(socks, append([]byte{5, 1, 0, 5, 1, 0, 3, 255}, junk()...))
			send(httpProxy, junk())
			send(webHost, junk())
		}
		for _, line := range []string{
			"GET / HTTP/1.1\r\n\r\n",
			"CONNECT real-peer HTTP/1.1\r\n\r\n",
			"GET http://[::1 HTTP/1.1\r\n\r\n",
			"GET http://real-peer:99999/ HTTP/1.1\r\n\r\n",
			"GET http://real-peer:8081/ HTTP/1.1\r\nX: \x00\r\n\r\n",
			"\r\n\r\n\r\n",
			"GET http://real-peer:8081/ HTTP/1.1\r\n" + strings.Repeat("X-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n", 3000) + "\r\n",
		} {
			send(httpProxy, []byte(line))
		}
		// Malformed DNS to the resolver, over the UDP relay and over TCP.
		ctl, relay := socks5(t, socks, 3, netip.MustParseAddrPort("0.0.0.0:0"))
		uc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 50; i++ {
			uc.WriteToUDPAddrPort(append([]byte{0, 0, 0, 1, 100, 100, 100, 100, 0, 53}, junk()...), relay)
			uc.WriteToUDPAddrPort(junk(), relay)
		}
		uc.Close()
		ctl.Close()
		for i := 0; i < 10; i++ {
			c, _ := socks5(t, socks, 1, netip.MustParseAddrPort("100.100.100.100:53"))
			c.SetDeadline(time.Now().Add(3 * time.Second))
			c.Write(junk())
			c.(*net.TCPConn).CloseWrite()
			io.Copy(io.Discard, c)
			c.Close()
		}
		d.alive(t)
		if out, err := curl(t, "--socks5-hostname", socks, "http://real-peer:8081/after"); err != nil || !strings.Contains(out, "/after") {
			t.Fatalf("SOCKS5 after bad input: %v %s", err, out)
		}
		if udp, _ := dnsOverSOCKS(t, socks, "real-peer.", dnsmessage.TypeA); udp != "RCodeSuccess "+w.ts.IPv4().String() {
			t.Fatalf("DNS after bad input: %s", udp)
		}
	})

	t.Run("web", func(t *testing.T) { checkWeb(t, d, w, webURL) })

	t.Run("down and up", func(t *testing.T) {
		if out, err := d.cli("down"); err != nil {
			t.Fatalf("down: %v\n%s", err, out)
		}
		d.waitState(t, "Stopped", 10*time.Second)
		if out, err := curl(t, "--socks5-hostname", socks, "http://real-peer:8081/down"); err == nil {
			t.Fatalf("SOCKS5 works while down: %s", out)
		}
		out, err := d.cli("up")
		if err != nil || !strings.Contains(out, "microlink is up") {
			t.Fatalf("up: %v\n%s", err, out)
		}
		d.waitState(t, "Running", 30*time.Second)
		if st := d.status(t); st.TailscaleIPs[0] != mlIP {
			t.Errorf("address changed across down/up: %s → %s", mlIP, st.TailscaleIPs[0])
		}
		ctx := testCtx(t, 20*time.Second)
		var last string
		for ctx.Err() == nil {
			out, err := curl(t, "--socks5-hostname", socks, "http://real-peer:8081/up-again")
			if err == nil && strings.Contains(out, "/up-again") {
				return
			}
			last = fmt.Sprint(err, out)
			time.Sleep(300 * time.Millisecond)
		}
		t.Fatalf("SOCKS5 after up: %s", last)
	})
}

// TestShieldsUp: with --shields-up, control is told, and the real peer's
// TCP SYNs get no answer, where a node without shields refuses them with
// a reset at once.
func TestShieldsUp(t *testing.T) {
	w := startWorld(t)
	open := startDaemon(t, w.l, "ml-open")
	shielded := startDaemon(t, w.l, "ml-shielded", "--shields-up")
	for _, n := range w.l.Control.AllNodes() {
		if n.Hostinfo.Hostname() == "ml-shielded" && !n.Hostinfo.ShieldsUp() {
			t.Errorf("control does not know ml-shielded's shields are up")
		}
	}
	dial := func(d *daemon) error {
		ip := d.status(t).TailscaleIPs[0]
		c, err := net.DialTimeout("tcp", net.JoinHostPort(ip, "9"), 3*time.Second)
		if err == nil {
			c.Close()
		}
		return err
	}
	// The peer may need a moment to have a path; retry until the open
	// node refuses.
	waitFor(t, 20*time.Second, "the open node to refuse a connection", func() bool {
		err := dial(open)
		return err != nil && strings.Contains(err.Error(), "refused")
	})
	for i := 0; i < 2; i++ {
		err := dial(shielded)
		if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
			t.Fatalf("dial to the shielded node: %v, want a timeout", err)
		}
	}
}
