package controltest

import (
	"bytes"
	"context"
	"encoding/hex"
	"io"
	"net"
	"testing"
	"testing/cryptotest"

	"github.com/microlink-go/microlink/internal/key"
	"github.com/microlink-go/microlink/internal/noise"
	"tailscale.com/control/controlbase"
	tskey "tailscale.com/types/key"
)

const testVersion = 130

func tsMachinePrivate(t testing.TB, k key.Private) tskey.MachinePrivate {
	t.Helper()
	var out tskey.MachinePrivate
	if err := out.UnmarshalText([]byte(k.String())); err != nil {
		t.Fatal(err)
	}
	return out
}

func tsMachinePublic(t testing.TB, k key.MachinePublic) tskey.MachinePublic {
	t.Helper()
	var out tskey.MachinePublic
	if err := out.UnmarshalText([]byte(k.String())); err != nil {
		t.Fatal(err)
	}
	return out
}

// fresh returns the next key.NewPrivate under the current randomness.
func fresh() []byte {
	k := key.NewPrivate()
	return k[:]
}

func fixedKey(b byte) key.Private {
	var k key.Private
	for i := range k {
		k[i] = b + byte(i)
	}
	k[0] &= 248
	k[31] = (k[31] & 127) | 64
	return k
}

// TestNoiseSameBytesAsControlbase checks that, given the same keys and the
// same randomness, our initiator and responder produce exactly the bytes
// that Tailscale's controlbase produces, records included.
func TestNoiseSameBytesAsControlbase(t *testing.T) {
	machine, server := fixedKey(1), fixedKey(100)
	serverPub := server.MachinePublic()

	cryptotest.SetGlobalRandom(t, 7)
	ours, err := noise.NewInitiator(machine, serverPub, testVersion)
	if err != nil {
		t.Fatal(err)
	}
	cryptotest.SetGlobalRandom(t, 7)
	theirs, cont, err := controlbase.ClientDeferred(tsMachinePrivate(t, machine), tsMachinePublic(t, serverPub), testVersion)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ours.Message(), theirs) {
		t.Fatalf("initiation differs:\nours   %x\ntheirs %x", ours.Message(), theirs)
	}

	// Server responses from both responders, with the same randomness.
	respond := func(accept func(net.Conn) (net.Conn, error)) (resp []byte, records []byte) {
		a, b := net.Pipe()
		defer a.Close()
		done := make(chan error, 1)
		go func() {
			c, err := accept(b)
			for _, m := range []string{"server hello", "two", "three"} {
				if err == nil {
					_, err = c.Write([]byte(m))
				}
			}
			if err == nil {
				_, err = c.Write(bytes.Repeat([]byte{'s'}, noise.MaxPlaintextSize+10))
			}
			done <- err
		}()
		all, _ := io.ReadAll(io.LimitReader(a, int64(noise.ResponseSize+3*(3+16)+len("server hellotwothree")+noise.MaxRecordSize+3+10+16)))
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		return all[:noise.ResponseSize], all[noise.ResponseSize:]
	}
	cryptotest.SetGlobalRandom(t, 8)
	oursResp, oursRecs := respond(func(c net.Conn) (net.Conn, error) { return noise.Accept(c, server, theirs) })
	cryptotest.SetGlobalRandom(t, 8)
	theirsResp, theirsRecs := respond(func(c net.Conn) (net.Conn, error) {
		return controlbase.Server(context.Background(), c, tsMachinePrivate(t, server), theirs)
	})
	if !bytes.Equal(oursResp, theirsResp) {
		t.Fatalf("response differs:\nours   %x\ntheirs %x", oursResp, theirsResp)
	}
	if !bytes.Equal(oursRecs, theirsRecs) {
		t.Fatalf("records differ:\nours   %x\ntheirs %x", oursRecs[:64], theirsRecs[:64])
	}

	// Both initiators accept that response and decrypt the records.
	for _, name := range []string{"ours", "theirs"} {
		a, b := net.Pipe()
		go func() {
			b.Write(theirsResp)
			b.Write(theirsRecs)
			b.Close()
		}()
		var r io.Reader
		if name == "ours" {
			c, err := ours.Finish(a)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			r = c
		} else {
			c, err := cont(context.Background(), a)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			r = c
		}
		got, err := io.ReadAll(r)
		if len(got) != len("server hellotwothree")+noise.MaxPlaintextSize+10 || string(got[:20]) != "server hellotwothree" {
			t.Fatalf("%s: read %d bytes (%v)", name, len(got), err)
		}
		a.Close()
	}

	t.Logf("machine %s\nserver %s", hex.EncodeToString(machine[:]), hex.EncodeToString(server[:]))
	t.Logf("initiation %x", theirs)
	t.Logf("response %x", theirsResp)
	t.Logf("first three records %x", theirsRecs[:3*(3+16)+20])
	cryptotest.SetGlobalRandom(t, 7)
	t.Logf("client ephemeral %s", hex.EncodeToString(fresh()))
	cryptotest.SetGlobalRandom(t, 8)
	t.Logf("server ephemeral %s", hex.EncodeToString(fresh()))
}
