package derp

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/microlink-go/microlink/internal/key"
)

func TestHandshake(t *testing.T) {
	defer checkGoroutines(t)()
	priv := key.NewPrivate()
	c, s := connectFake(t, Options{PrivateKey: priv}, ServerInfo{Version: 2})
	if c.ServerPublicKey() != s.priv.NodePublic() {
		t.Errorf("ServerPublicKey = %v, want %v", c.ServerPublicKey(), s.priv.NodePublic())
	}
	if s.clientKey != priv.NodePublic() {
		t.Errorf("server saw client key %v, want %v", s.clientKey, priv.NodePublic())
	}
	if got, want := string(s.rawInfo), `{"version":2,"CanAckPings":true}`; got != want {
		t.Errorf("ClientInfo = %s, want %s", got, want)
	}
	if c.ServerInfo().Version != 2 {
		t.Errorf("ServerInfo = %+v", c.ServerInfo())
	}
	c.Close()
	s.conn.Close()
}

func TestHandshakeNoPingAcks(t *testing.T) {
	_, s := connectFake(t, Options{DisablePingAcks: true, AppName: "test"}, ServerInfo{})
	if got, want := string(s.rawInfo), `{"version":2,"CanAckPings":false,"AppName":"test"}`; got != want {
		t.Errorf("ClientInfo = %s, want %s", got, want)
	}
}

func TestHandshakeKnownKeyMismatch(t *testing.T) {
	cc, sc := tcpPair(t)
	defer cc.Close()
	defer sc.Close()
	s := &fakeServer{priv: key.NewPrivate(), conn: sc, br: newReader(sc)}
	go s.handshake(ServerInfo{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	wrong := key.NewPrivate().NodePublic()
	_, err := newClient(ctx, cc, newReader(cc), wrong, Options{PrivateKey: key.NewPrivate()})
	if err == nil || !strings.Contains(err.Error(), "differs") {
		t.Fatalf("handshake with a mismatching announced key: %v", err)
	}
}

func TestHandshakeTimeout(t *testing.T) {
	cc, sc := tcpPair(t)
	defer cc.Close()
	defer sc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := newClient(ctx, cc, newReader(cc), key.NodePublic{}, Options{PrivateKey: key.NewPrivate()})
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("silent server: err = %v", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Fatalf("handshake took %v", time.Since(start))
	}
}

func TestSendFrame(t *testing.T) {
	c, s := connectFake(t, Options{}, ServerInfo{})
	dst := key.NewPrivate().NodePublic()
	if err := c.Send(dst, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	ft, p := s.read(t)
	want := append(append([]byte(nil), dst[:]...), "hello"...)
	if ft != frameSendPacket || !bytes.Equal(p, want) {
		t.Fatalf("got %#x %x, want SendPacket %x", byte(ft), p, want)
	}
	if err := c.Send(dst, make([]byte, MaxPacketSize+1)); !errors.Is(err, ErrPacketTooBig) {
		t.Errorf("oversize Send: %v", err)
	}
}

func TestNotePreferredFrame(t *testing.T) {
	c, s := connectFake(t, Options{}, ServerInfo{})
	for _, home := range []bool{true, false} {
		if err := c.NotePreferred(home); err != nil {
			t.Fatal(err)
		}
		ft, p := s.read(t)
		want := byte(0)
		if home {
			want = 1
		}
		if ft != frameNotePreferred || len(p) != 1 || p[0] != want {
			t.Fatalf("NotePreferred(%v) sent %#x %x", home, byte(ft), p)
		}
	}
}

func TestRecvMessages(t *testing.T) {
	c, s := connectFake(t, Options{}, ServerInfo{})
	peer := key.NewPrivate().NodePublic()
	big := bytes.Repeat([]byte{0xab}, 60000) // larger than the bufio buffer
	go func() {
		s.send(t, frameRecvPacket, append(append([]byte(nil), peer[:]...), "data"...))
		s.send(t, 0x7f, []byte("unknown frames are skipped"))
		s.send(t, frameKeepAlive, nil)
		s.send(t, frameRecvPacket, []byte("short")) // dropped
		s.send(t, framePeerGone, append(append([]byte(nil), peer[:]...), 1))
		s.send(t, frameHealth, []byte("duplicate key"))
		s.send(t, frameRestarting, []byte{0, 0, 1, 0, 0, 0, 2, 0})
		s.send(t, frameRecvPacket, append(append([]byte(nil), peer[:]...), big...))
		s.send(t, frameServerKey, append([]byte(Magic), peer[:]...)) // skipped
		s.send(t, framePeerPresent, peer[:])
	}()
	m, err := c.Recv()
	if rp, ok := m.(*ReceivedPacket); err != nil || !ok || rp.Source != peer || string(rp.Data) != "data" {
		t.Fatalf("1: %#v %v", m, err)
	}
	if m, err := c.Recv(); err != nil || m != (KeepAlive{}) {
		t.Fatalf("2: %#v %v", m, err)
	}
	if m, err := c.Recv(); err != nil || m != (PeerGone{Key: peer, Reason: PeerGoneNotHere}) {
		t.Fatalf("3: %#v %v", m, err)
	}
	if m, err := c.Recv(); err != nil || m != (Health{Problem: "duplicate key"}) {
		t.Fatalf("4: %#v %v", m, err)
	}
	if m, err := c.Recv(); err != nil || m != (Restarting{ReconnectIn: 256 * time.Millisecond, TryFor: 512 * time.Millisecond}) {
		t.Fatalf("5: %#v %v", m, err)
	}
	m, err = c.Recv()
	if rp, ok := m.(*ReceivedPacket); err != nil || !ok || !bytes.Equal(rp.Data, big) {
		t.Fatalf("6: %T %v", m, err)
	}
	if m, err := c.Recv(); err != nil || m != (PeerPresent{Key: peer}) {
		t.Fatalf("7: %#v %v", m, err)
	}
}

func TestRecvServerInfoSetsRateLimit(t *testing.T) {
	c, s := connectFake(t, Options{}, ServerInfo{})
	go s.sendServerInfo(ServerInfo{Version: 2, TokenBucketBytesPerSecond: 1, TokenBucketBytesBurst: 100})
	m, err := c.Recv()
	if si, ok := m.(ServerInfo); err != nil || !ok || si.TokenBucketBytesBurst != 100 {
		t.Fatalf("got %#v %v", m, err)
	}
	dst := key.NewPrivate().NodePublic()
	if err := c.Send(dst, make([]byte, 40)); err != nil { // 77 bytes on the wire: allowed
		t.Fatal(err)
	}
	if err := c.Send(dst, make([]byte, 40)); err != nil { // over budget: dropped silently
		t.Fatal(err)
	}
	c.NotePreferred(true) // not rate limited; marks the end
	if ft, _ := s.read(t); ft != frameSendPacket {
		t.Fatalf("first frame %#x", byte(ft))
	}
	if ft, _ := s.read(t); ft != frameNotePreferred {
		t.Fatalf("second frame %#x, want NotePreferred (the second packet should be dropped)", byte(ft))
	}
}

func TestServerPingAnswered(t *testing.T) {
	c, s := connectFake(t, Options{}, ServerInfo{})
	go func() {
		for {
			if _, err := c.Recv(); err != nil {
				return
			}
		}
	}()
	ping := []byte{1, 2, 3, 4, 5, 6, 7, 8}
	s.send(t, framePing, ping)
	ft, p := s.read(t)
	if ft != framePong || !bytes.Equal(p, ping) {
		t.Fatalf("answer to Ping: %#x %x", byte(ft), p)
	}
	// A ping with extra bytes is answered with its first 8.
	s.send(t, framePing, []byte("abcdefgh-extra"))
	if ft, p := s.read(t); ft != framePong || string(p) != "abcdefgh" {
		t.Fatalf("answer to long Ping: %#x %q", byte(ft), p)
	}
}

// TestServerPingReturned: with ReturnPings, Recv hands the server's ping
// to the caller, writes nothing itself, and SendPong answers it.
func TestServerPingReturned(t *testing.T) {
	c, s := connectFake(t, Options{ReturnPings: true}, ServerInfo{})
	if s.clientInfo["CanAckPings"] != true {
		t.Fatalf("ClientInfo %s does not say the client answers pings", s.rawInfo)
	}
	s.send(t, framePing, []byte("abcdefgh-extra"))
	var m Message
	for {
		var err error
		if m, err = c.Recv(); err != nil {
			t.Fatal(err)
		}
		if _, ok := m.(ServerInfo); !ok {
			break
		}
	}
	ping, ok := m.(Ping)
	if !ok || string(ping[:]) != "abcdefgh" {
		t.Fatalf("Recv = %#v, want the ping", m)
	}
	c.NotePreferred(true)
	if ft, _ := s.read(t); ft != frameNotePreferred {
		t.Fatalf("client sent %#x before NotePreferred: Recv answered the ping itself", byte(ft))
	}
	if err := c.SendPong(ping); err != nil {
		t.Fatal(err)
	}
	if ft, p := s.read(t); ft != framePong || string(p) != "abcdefgh" {
		t.Fatalf("SendPong wrote %#x %q", byte(ft), p)
	}
}

func TestServerPingNotAnsweredWhenDisabled(t *testing.T) {
	c, s := connectFake(t, Options{DisablePingAcks: true}, ServerInfo{})
	go func() {
		for {
			if _, err := c.Recv(); err != nil {
				return
			}
		}
	}()
	s.send(t, framePing, []byte{1, 2, 3, 4, 5, 6, 7, 8})
	s.send(t, frameKeepAlive, nil)
	time.Sleep(50 * time.Millisecond)
	c.NotePreferred(true)
	if ft, _ := s.read(t); ft != frameNotePreferred {
		t.Fatalf("client sent %#x before NotePreferred", byte(ft))
	}
}

func TestClientPing(t *testing.T) {
	c, s := connectFake(t, Options{}, ServerInfo{})
	go func() {
		for {
			if _, err := c.Recv(); err != nil {
				return
			}
		}
	}()
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := c.Ping(ctx)
		done <- err
	}()
	p := s.readType(t, framePing)
	s.send(t, framePong, []byte("wrong..."))
	select {
	case err := <-done:
		t.Fatalf("Ping returned on a wrong Pong: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	s.send(t, framePong, p)
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.Ping(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("unanswered Ping: %v", err)
	}
}

func TestRecvRejectsOversize(t *testing.T) {
	c, s := connectFake(t, Options{}, ServerInfo{})
	go func() {
		s.conn.Write(appendFrameHeader(nil, frameRecvPacket, maxFrameSize+1))
	}()
	_, err := c.Recv()
	if !errors.Is(err, errFrameSize) {
		t.Fatalf("oversize frame: %v", err)
	}
	if _, err2 := c.Recv(); err2 != err {
		t.Errorf("error not sticky: %v", err2)
	}
	select {
	case <-c.Done():
	default:
		t.Error("client not closed after a read error")
	}
	if err := c.Send(key.NodePublic{}, nil); err == nil {
		t.Error("Send succeeded on a broken client")
	}
}

func TestRecvAcceptsMaxFrame(t *testing.T) {
	c, s := connectFake(t, Options{}, ServerInfo{})
	go func() {
		s.send(t, 0x7e, make([]byte, maxFrameSize))
		s.send(t, frameKeepAlive, nil)
	}()
	if m, err := c.Recv(); err != nil || m != (KeepAlive{}) {
		t.Fatalf("after a 1 MiB unknown frame: %#v %v", m, err)
	}
}

func TestRecvTruncated(t *testing.T) {
	c, s := connectFake(t, Options{}, ServerInfo{})
	s.conn.Write(append(appendFrameHeader(nil, frameRecvPacket, 100), 1, 2, 3))
	s.conn.Close()
	if _, err := c.Recv(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated frame: %v", err)
	}
}

func TestCloseUnblocksRecvAndPing(t *testing.T) {
	defer checkGoroutines(t)()
	c, _ := connectFake(t, Options{}, ServerInfo{})
	errc := make(chan error, 2)
	go func() {
		_, err := c.Recv()
		errc <- err
	}()
	go func() {
		_, err := c.Ping(context.Background())
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	c.Close()
	for range 2 {
		select {
		case err := <-errc:
			if !errors.Is(err, ErrClosed) {
				t.Errorf("after Close: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Close did not unblock")
		}
	}
}

func TestSendAllocs(t *testing.T) {
	c, s := connectFake(t, Options{}, ServerInfo{})
	go io.Copy(io.Discard, s.conn)
	dst := key.NewPrivate().NodePublic()
	pkt := make([]byte, 1280)
	if n := testing.AllocsPerRun(200, func() {
		if err := c.Send(dst, pkt); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("Send allocates %v times per call", n)
	}
}

func TestRecvAllocs(t *testing.T) {
	c, s := connectFake(t, Options{}, ServerInfo{})
	peer := key.NewPrivate().NodePublic()
	frame := appendFrame(nil, frameRecvPacket, append(append([]byte(nil), peer[:]...), make([]byte, 1280)...))
	const runs = 200
	go func() {
		for range runs + 1 {
			if _, err := s.conn.Write(frame); err != nil {
				return
			}
		}
	}()
	if n := testing.AllocsPerRun(runs, func() {
		m, err := c.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if rp, ok := m.(*ReceivedPacket); !ok || len(rp.Data) != 1280 {
			t.Fatalf("got %T", m)
		}
	}); n != 0 {
		t.Fatalf("Recv allocates %v times per packet", n)
	}
}

func TestRecvFromBytes(t *testing.T) {
	var in []byte
	peer := key.NewPrivate().NodePublic()
	in = appendFrame(in, frameRecvPacket, append(peer[:], 'x'))
	in = appendFrame(in, framePing, []byte("12345678"))
	in = binary.BigEndian.AppendUint32(append(in, byte(frameKeepAlive)), 0)
	c := newBytesClient(string(in))
	if m, err := c.Recv(); err != nil || string(m.(*ReceivedPacket).Data) != "x" {
		t.Fatalf("%#v %v", m, err)
	}
	if m, err := c.Recv(); err != nil || m != (KeepAlive{}) {
		t.Fatalf("%#v %v", m, err)
	}
	if _, err := c.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("at end: %v", err)
	}
}
