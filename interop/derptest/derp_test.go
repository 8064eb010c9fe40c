package derptest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	tsderp "tailscale.com/derp"
	"tailscale.com/disco"
	tskey "tailscale.com/types/key"

	"github.com/microlink-go/microlink/internal/derp"
	"github.com/microlink-go/microlink/internal/key"
)

func TestExchangePackets(t *testing.T) {
	r := startRelay(t, "127.0.0.1:0")
	infos := make(chan tsderp.ClientInfo, 4)
	r.srv.ForTest().SetOnClientInfo(func(_ tskey.NodePublic, ci tsderp.ClientInfo) { infos <- ci })

	priv := key.NewPrivate()
	ours := dialOurs(t, r, priv)
	if got, want := ours.ServerPublicKey(), key.NodePublic(r.srv.PublicKey().Raw32()); got != want {
		t.Fatalf("ServerPublicKey = %v, want %v", got, want)
	}
	if ci := <-infos; ci.Version != 2 || !ci.CanAckPings {
		t.Errorf("server saw ClientInfo %+v", ci)
	}
	ref := dialReference(t, r)
	msgs := recvAll(ours)

	for _, size := range []int{0, 1, 1280, 9000, derp.MaxPacketSize} {
		pkt := bytes.Repeat([]byte{byte(size)}, size)
		// Ours to reference.
		if err := ours.Send(ref.key(), pkt); err != nil {
			t.Fatal(err)
		}
		got := recvReference(t, ref)
		if got.Source != tsPublic(t, priv.NodePublic()) || !bytes.Equal(got.Data, pkt) {
			t.Fatalf("reference got %d bytes from %v, want %d from us", len(got.Data), got.Source, size)
		}
		// Reference to ours.
		if err := ref.Send(tsPublic(t, priv.NodePublic()), pkt); err != nil {
			t.Fatal(err)
		}
		rp := next[*derp.ReceivedPacket](t, msgs)
		if rp.Source != ref.key() || !bytes.Equal(rp.Data, pkt) {
			t.Fatalf("we got %d bytes from %v, want %d from %v", len(rp.Data), rp.Source, size, ref.key())
		}
	}
}

// recvReference returns the next packet the reference client receives.
func recvReference(t *testing.T, ref *reference) tsderp.ReceivedPacket {
	t.Helper()
	type res struct {
		m   tsderp.ReceivedMessage
		err error
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		ch := make(chan res, 1)
		go func() {
			m, err := ref.Recv()
			ch <- res{m, err}
		}()
		select {
		case r := <-ch:
			if r.err != nil {
				t.Fatalf("reference Recv: %v", r.err)
			}
			if p, ok := r.m.(tsderp.ReceivedPacket); ok {
				return p
			}
		case <-time.After(10 * time.Second):
			t.Fatal("reference client received nothing")
		}
	}
	t.Fatal("reference client received no packet")
	return tsderp.ReceivedPacket{}
}

func TestFastStart(t *testing.T) {
	r := startRelayWith(t, "127.0.0.1:0", true)
	priv := key.NewPrivate()
	n := r.node()
	n.HostName = "derp.test" // the server finds its certificate by SNI, which IPs lack
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ours, err := derp.Dial(ctx, []derp.Node{n}, derp.Options{PrivateKey: priv})
	if err != nil {
		t.Fatal(err)
	}
	defer ours.Close()
	r.waitRegistered(t, tsPublic(t, priv.NodePublic()))
	if h := r.headers(); len(h) != 1 || h[0].Get("Derp-Fast-Start") != "1" {
		t.Fatalf("requests %v, want one with Derp-Fast-Start: 1", h)
	}
	if got, want := ours.ServerPublicKey(), key.NodePublic(r.srv.PublicKey().Raw32()); got != want {
		t.Fatalf("ServerPublicKey = %v, want %v", got, want)
	}
	ref := dialReference(t, r)
	msgs := recvAll(ours)
	if err := ref.Send(tsPublic(t, priv.NodePublic()), []byte("fast")); err != nil {
		t.Fatal(err)
	}
	if rp := next[*derp.ReceivedPacket](t, msgs); string(rp.Data) != "fast" {
		t.Fatalf("got %q", rp.Data)
	}
	if err := ours.Send(ref.key(), []byte("start")); err != nil {
		t.Fatal(err)
	}
	if p := recvReference(t, ref); string(p.Data) != "start" {
		t.Fatalf("reference got %q", p.Data)
	}
}

func TestDialFallsBackAcrossNodes(t *testing.T) {
	r := startRelay(t, "127.0.0.1:0")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := ln.Addr().(*net.TCPAddr).Port
	ln.Close()

	good := r.node()
	good.Name = "1d"
	nodes := []derp.Node{
		{Name: "1a", RegionID: 1, HostName: "stun.invalid", STUNOnly: true},
		{Name: "1b", RegionID: 1, HostName: "127.0.0.1", IPv4: "none", IPv6: "none", InsecureForTests: true},
		{Name: "1c", RegionID: 1, HostName: "127.0.0.1", IPv4: "127.0.0.1", IPv6: "none", DERPPort: closedPort, InsecureForTests: true},
		good,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := derp.Dial(ctx, nodes, derp.Options{PrivateKey: key.NewPrivate()})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if h := r.headers(); len(h) != 1 || h[0].Get("Ideal-Node") != "1a" || h[0].Get("Upgrade") != "DERP" {
		t.Fatalf("requests %v, want one with Ideal-Node: 1a", h)
	}

	if _, err := derp.Dial(ctx, nodes[:3], derp.Options{PrivateKey: key.NewPrivate()}); err == nil {
		t.Fatal("Dial succeeded with no reachable node")
	}
}

func TestNotePreferred(t *testing.T) {
	r := startRelay(t, "127.0.0.1:0")
	ours := dialOurs(t, r, key.NewPrivate())
	if n := r.homeConnections(); n != 0 {
		t.Fatalf("home connections before NotePreferred: %d", n)
	}
	if err := ours.NotePreferred(true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "home connection counted", func() bool { return r.homeConnections() == 1 })
	if err := ours.NotePreferred(false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "home connection uncounted", func() bool { return r.homeConnections() == 0 })
}

func TestPingServer(t *testing.T) {
	r := startRelay(t, "127.0.0.1:0")
	ours := dialOurs(t, r, key.NewPrivate())
	recvAll(ours)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rtt, err := ours.Ping(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rtt <= 0 || rtt > 5*time.Second {
		t.Fatalf("rtt = %v", rtt)
	}
}

func TestPeerGone(t *testing.T) {
	r := startRelay(t, "127.0.0.1:0")
	priv := key.NewPrivate()
	ours := dialOurs(t, r, priv)
	msgs := recvAll(ours)
	ref := dialReference(t, r)

	// Having heard from the peer, we hear when it leaves.
	if err := ref.Send(tsPublic(t, priv.NodePublic()), []byte("hi")); err != nil {
		t.Fatal(err)
	}
	next[*derp.ReceivedPacket](t, msgs)
	ref.Close()
	pg := next[derp.PeerGone](t, msgs)
	if pg.Key != ref.key() || pg.Reason != derp.PeerGoneDisconnected {
		t.Fatalf("PeerGone = %+v, want %v disconnected", pg, ref.key())
	}

	// A disco packet to an unknown key is answered with "not here".
	stranger := key.NewPrivate().NodePublic()
	pkt := append([]byte(disco.Magic), make([]byte, 32+24+16)...)
	if err := ours.Send(stranger, pkt); err != nil {
		t.Fatal(err)
	}
	pg = next[derp.PeerGone](t, msgs)
	if pg.Key != stranger || pg.Reason != derp.PeerGoneNotHere {
		t.Fatalf("PeerGone = %+v, want %v not here", pg, stranger)
	}
}

func TestCertificatePinning(t *testing.T) {
	r := startRelay(t, "127.0.0.1:0")
	sum := sha256.Sum256(r.http.Certificate().Raw)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	n := r.node()
	n.InsecureForTests = false
	n.CertName = "sha256-raw:" + hex.EncodeToString(sum[:])
	c, err := derp.Dial(ctx, []derp.Node{n}, derp.Options{PrivateKey: key.NewPrivate()})
	if err != nil {
		t.Fatalf("pinned to the right hash: %v", err)
	}
	c.Close()

	sum[0] ^= 1
	n.CertName = "sha256-raw:" + hex.EncodeToString(sum[:])
	if c, err := derp.Dial(ctx, []derp.Node{n}, derp.Options{PrivateKey: key.NewPrivate()}); err == nil {
		c.Close()
		t.Fatal("pinned to a wrong hash, yet connected")
	}
}

func TestCertificateVerification(t *testing.T) {
	r := startRelay(t, "127.0.0.1:0")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pool := x509.NewCertPool()
	pool.AddCert(r.http.Certificate())

	n := r.node()
	n.InsecureForTests = false
	dial := func(n derp.Node, opts derp.Options) error {
		opts.PrivateKey = key.NewPrivate()
		c, err := derp.Dial(ctx, []derp.Node{n}, opts)
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := dial(n, derp.Options{}); err == nil {
		t.Error("self-signed certificate accepted without InsecureForTests")
	}
	if err := dial(n, derp.Options{RootCAs: pool}); err != nil {
		t.Errorf("certificate from a trusted root refused: %v", err)
	}
	n.CertName = "example.com" // the httptest certificate's name
	if err := dial(n, derp.Options{RootCAs: pool}); err != nil {
		t.Errorf("CertName example.com refused: %v", err)
	}
	n.CertName = "derp.example.org"
	if err := dial(n, derp.Options{RootCAs: pool}); err == nil {
		t.Error("certificate accepted for the wrong CertName")
	}
}

func TestServerPingAnswered(t *testing.T) {
	fs := startFakeRelay(t)
	ours := dialOurs(t, fs.relay(), key.NewPrivate())
	go func() {
		for {
			if _, err := ours.Recv(); err != nil {
				return
			}
		}
	}()
	ping := [8]byte{9, 8, 7, 6, 5, 4, 3, 2}
	if err := fs.sendPing(ping); err != nil {
		t.Fatal(err)
	}
	select {
	case pong := <-fs.pongs:
		if pong != ping {
			t.Fatalf("pong %x, want %x", pong, ping)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no pong")
	}
}

// TestSendDoesNotAllocate counts the allocations of our client's Send over
// TLS to a real relay. AllocsPerRun counts the whole process, so the relay
// and the receiving reference client, which allocate per packet, run in a
// child process of this test binary.
func TestSendDoesNotAllocate(t *testing.T) {
	if os.Getenv("DERPTEST_RELAY_CHILD") == "1" {
		r := startRelay(t, "127.0.0.1:0")
		ref := dialReference(t, r)
		go func() {
			for {
				if _, err := ref.Recv(); err != nil {
					return
				}
			}
		}()
		fmt.Printf("relay %s %s\n", r.addr, ref.key())
		io.Copy(io.Discard, os.Stdin) // until the parent is done
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSendDoesNotAllocate$")
	cmd.Env = append(os.Environ(), "DERPTEST_RELAY_CHILD=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Wait()
	})
	var addr, dstText string
	if _, err := fmt.Fscanf(bufio.NewReader(stdout), "relay %s %s\n", &addr, &dstText); err != nil {
		t.Fatalf("relay child: %v", err)
	}
	go io.Copy(io.Discard, stdout)
	var dst key.NodePublic
	if err := dst.UnmarshalText([]byte(dstText)); err != nil {
		t.Fatal(err)
	}
	ours := dialOurs(t, &relay{t: t, addr: addr}, key.NewPrivate())
	pkt := make([]byte, 1280)
	if n := testing.AllocsPerRun(200, func() {
		if err := ours.Send(dst, pkt); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("Send over TLS allocates %v times per packet", n)
	}
}

func TestRegionsReconnect(t *testing.T) {
	t.Cleanup(checkGoroutines(t)) // runs last, after the servers stop
	r := startRelay(t, "127.0.0.1:0")
	addr := r.addr
	var mu sync.Mutex
	cur := r
	priv := key.NewPrivate()
	got := make(chan string, 16)
	regions := derp.NewRegions(derp.RegionsOptions{
		PrivateKey: priv,
		Lookup: func(id int) []derp.Node {
			mu.Lock()
			defer mu.Unlock()
			if id != 1 {
				return nil
			}
			return []derp.Node{cur.node()}
		},
		Receive: func(region int, src key.NodePublic, pkt []byte) {
			got <- fmt.Sprintf("%d %s", region, pkt)
		},
	})
	defer regions.Close()
	regions.SetHome(1)
	waitFor(t, "home connected", func() bool { return regions.Connected(1) })
	waitFor(t, "home noted", func() bool { return r.homeConnections() == 1 })

	exchange := func(r *relay, round string) {
		t.Helper()
		ref := dialReference(t, r)
		defer ref.Close()
		if err := ref.Send(tsPublic(t, priv.NodePublic()), []byte(round)); err != nil {
			t.Fatal(err)
		}
		select {
		case s := <-got:
			if s != "1 "+round {
				t.Fatalf("received %q, want %q", s, "1 "+round)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: packet not received", round)
		}
		// Region 0 answers over the region the peer was heard on.
		if err := regions.Send(0, ref.key(), []byte("re: "+round)); err != nil {
			t.Fatal(err)
		}
		if p := recvReference(t, ref); string(p.Data) != "re: "+round {
			t.Fatalf("reference got %q", p.Data)
		}
	}
	exchange(r, "before restart")

	// Restart the server on the same port, with a new key.
	r.stop()
	waitFor(t, "disconnect noticed", func() bool { return !regions.Connected(1) })
	r2 := startRelay(t, addr)
	mu.Lock()
	cur = r2
	mu.Unlock()
	waitFor(t, "reconnected", func() bool { return regions.Connected(1) })
	waitFor(t, "home noted after reconnect", func() bool { return r2.homeConnections() == 1 })
	exchange(r2, "after restart")
}

func TestRegionsLatency(t *testing.T) {
	r := startRelay(t, "127.0.0.1:0")
	regions := derp.NewRegions(derp.RegionsOptions{
		PrivateKey: key.NewPrivate(),
		Lookup:     func(int) []derp.Node { return []derp.Node{r.node()} },
	})
	defer regions.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := regions.Latency(ctx, 1); err != nil {
		t.Fatal(err)
	}
	regions.Close()
	if _, err := regions.Latency(ctx, 1); !errors.Is(err, derp.ErrClosed) {
		t.Fatalf("Latency after Close: %v", err)
	}
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}
