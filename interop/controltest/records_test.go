package controltest

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/microlink-go/microlink/internal/key"
	"github.com/microlink-go/microlink/internal/noise"
	"github.com/microlink-go/microlink/internal/ts2021"
	"tailscale.com/control/controlbase"
	"tailscale.com/control/controlhttp/controlhttpserver"
	"tailscale.com/tailcfg"
	tskey "tailscale.com/types/key"
)

// exchange writes msgs on w one at a time and checks that r receives
// them; then the same in the other direction.
func exchange(t *testing.T, a, b io.ReadWriter) {
	t.Helper()
	big := bytes.Repeat([]byte("0123456789"), 1000) // spans three records
	msgs := [][]byte{[]byte("one"), []byte("two"), []byte("three"), big}
	for _, dir := range []struct {
		name string
		w    io.Writer
		r    io.Reader
	}{{"a→b", a, b}, {"b→a", b, a}} {
		errc := make(chan error, 1)
		go func() {
			for _, m := range msgs {
				if _, err := dir.w.Write(m); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
		for _, m := range msgs {
			got := make([]byte, len(m))
			if _, err := io.ReadFull(dir.r, got); err != nil {
				t.Fatalf("%s: read: %v", dir.name, err)
			}
			if !bytes.Equal(got, m) {
				t.Fatalf("%s: got %.20q, want %.20q", dir.name, got, m)
			}
		}
		if err := <-errc; err != nil {
			t.Fatalf("%s: write: %v", dir.name, err)
		}
	}
}

func tcpPair(t *testing.T) (client, server net.Conn) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// TestNoiseInitiatorWithControlbaseServer runs our initiator against
// controlbase.Server over TCP loopback.
func TestNoiseInitiatorWithControlbaseServer(t *testing.T) {
	machine, server := key.NewPrivate(), key.NewPrivate()
	cc, sc := tcpPair(t)
	type res struct {
		c   *controlbase.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := controlbase.Server(context.Background(), sc, tsMachinePrivate(t, server), nil)
		ch <- res{c, err}
	}()
	ours, err := noise.Client(cc, machine, server.MachinePublic(), testVersion)
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.c.Peer() != tsMachinePublic(t, machine.MachinePublic()) || r.c.ProtocolVersion() != testVersion {
		t.Fatalf("controlbase sees %v v%d", r.c.Peer(), r.c.ProtocolVersion())
	}
	if ours.HandshakeHash() != r.c.HandshakeHash() {
		t.Fatal("handshake hashes differ")
	}
	exchange(t, ours, r.c)
}

// TestNoiseResponderWithControlbaseClient runs controlbase.Client against
// our responder.
func TestNoiseResponderWithControlbaseClient(t *testing.T) {
	machine, server := key.NewPrivate(), key.NewPrivate()
	cc, sc := tcpPair(t)
	type res struct {
		c   *noise.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := noise.Accept(sc, server, nil)
		ch <- res{c, err}
	}()
	theirs, err := controlbase.Client(context.Background(), cc, tsMachinePrivate(t, machine), tsMachinePublic(t, server.MachinePublic()), testVersion)
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.c.Peer() != machine.MachinePublic() {
		t.Fatal("wrong peer")
	}
	exchange(t, theirs, r.c)
}

// TestUpgradeWithAcceptHTTP dials our ts2021 upgrade against Tailscale's
// controlhttpserver.AcceptHTTP, which also sends an early payload, then
// exchanges records.
func TestUpgradeWithAcceptHTTP(t *testing.T) {
	for _, early := range []bool{true, false} {
		t.Run(fmt.Sprintf("early=%v", early), func(t *testing.T) {
			server := key.NewPrivate()
			conns := make(chan *controlbase.Conn, 1)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/ts2021" {
					http.NotFound(w, r)
					return
				}
				var ew func(int, io.Writer) error
				if early {
					ew = func(v int, w io.Writer) error {
						b, _ := json.Marshal(tailcfg.EarlyNoise{NodeKeyChallenge: tskey.NewChallenge().Public()})
						var hdr [9]byte
						copy(hdr[:], "\xff\xff\xffTS")
						binary.BigEndian.PutUint32(hdr[5:], uint32(len(b)))
						_, err := w.Write(append(hdr[:], b...))
						return err
					}
				}
				c, err := controlhttpserver.AcceptHTTP(r.Context(), w, r, tsMachinePrivate(t, server), ew)
				if err != nil {
					t.Errorf("AcceptHTTP: %v", err)
					return
				}
				conns <- c
			}))
			defer srv.Close()

			d, err := ts2021.NewDialer(srv.URL, key.NewPrivate(), server.MachinePublic(), testVersion)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := d.Dial(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			sc := <-conns
			defer sc.Close()
			exchange(t, c, sc)
			if got := c.EarlyPayload(); (got != nil) != early {
				t.Fatalf("early payload %+v", got)
			}
		})
	}
}
