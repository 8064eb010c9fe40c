package derp

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/nacl/box"

	"github.com/microlink-go/microlink/internal/key"
)

// fakeServer is the server end of one DERP connection, driven by a test.
type fakeServer struct {
	priv       key.Private
	conn       net.Conn
	br         *bufio.Reader
	clientKey  key.NodePublic
	clientInfo map[string]any
	rawInfo    []byte
}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t testing.TB) (client, server net.Conn) {
	t.Helper()
	client, server, err := dialPair()
	if err != nil {
		t.Fatal(err)
	}
	return client, server
}

func dialPair() (client, server net.Conn, err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	r := <-ch
	if err != nil || r.err != nil {
		if client != nil {
			client.Close()
		}
		if r.c != nil {
			r.c.Close()
		}
		return nil, nil, errors.Join(err, r.err)
	}
	return client, r.c, nil
}

// handshake runs the server side of the DERP handshake, answering with si.
func (s *fakeServer) handshake(si ServerInfo) error {
	pub := s.priv.Public()
	if _, err := s.conn.Write(appendFrame(nil, frameServerKey, append([]byte(Magic), pub[:]...))); err != nil {
		return err
	}
	t, p, err := readFrame(s.br, 1<<20, nil)
	if err != nil {
		return err
	}
	if t != frameClientInfo || len(p) < keyLen+nonceLen {
		return fmt.Errorf("got frame %#x len %d, want ClientInfo", byte(t), len(p))
	}
	s.clientKey = key.NodePublic(p[:keyLen])
	var nonce [nonceLen]byte
	copy(nonce[:], p[keyLen:])
	msg, ok := box.Open(nil, p[keyLen+nonceLen:], &nonce, (*[32]byte)(&s.clientKey), (*[32]byte)(&s.priv))
	if !ok {
		return errors.New("ClientInfo box does not open")
	}
	s.rawInfo = msg
	if err := json.Unmarshal(msg, &s.clientInfo); err != nil {
		return err
	}
	return s.sendServerInfo(si)
}

func (s *fakeServer) sendServerInfo(si ServerInfo) error {
	js, _ := json.Marshal(si)
	var nonce [nonceLen]byte
	rand.Read(nonce[:])
	sealed := box.Seal(nonce[:], js, &nonce, (*[32]byte)(&s.clientKey), (*[32]byte)(&s.priv))
	_, err := s.conn.Write(appendFrame(nil, frameServerInfo, sealed))
	return err
}

func (s *fakeServer) send(t testing.TB, ft frameType, payload []byte) {
	t.Helper()
	if _, err := s.conn.Write(appendFrame(nil, ft, payload)); err != nil {
		t.Errorf("server write: %v", err)
	}
}

// read returns the next frame the client sent, failing after 5 s.
func (s *fakeServer) read(t testing.TB) (frameType, []byte) {
	t.Helper()
	s.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	ft, p, err := readFrame(s.br, 1<<20, nil)
	if err != nil {
		t.Fatalf("server read: %v", err)
	}
	return ft, p
}

// readNonPong returns the next frame that is not a Pong.
func (s *fakeServer) readType(t testing.TB, want frameType) []byte {
	t.Helper()
	for {
		ft, p := s.read(t)
		if ft == want {
			return p
		}
	}
}

// connectFake makes a Client connected to a new fakeServer over loopback TCP.
func connectFake(t testing.TB, opts Options, si ServerInfo) (*Client, *fakeServer) {
	t.Helper()
	cc, sc := tcpPair(t)
	s := &fakeServer{priv: key.NewPrivate(), conn: sc, br: bufio.NewReader(sc)}
	errc := make(chan error, 1)
	go func() { errc <- s.handshake(si) }()
	if opts.PrivateKey.IsZero() {
		opts.PrivateKey = key.NewPrivate()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := newClient(ctx, cc, bufio.NewReader(cc), key.NodePublic{}, opts)
	if err != nil {
		cc.Close()
		sc.Close()
		t.Fatalf("newClient: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	t.Cleanup(func() {
		c.Close()
		sc.Close()
	})
	return c, s
}

// checkGoroutines records the goroutine count and returns a func that
// fails the test if more are running than before, after a grace period.
func checkGoroutines(t testing.TB) func() {
	before := runtime.NumGoroutine()
	return func() {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Errorf("goroutines leaked: %d before, %d after\n%s", before, n, buf)
		}
	}
}

// bytesConn is a net.Conn that reads from a fixed input and discards writes.
type bytesConn struct {
	r io.Reader
}

func (c *bytesConn) Read(b []byte) (int, error)       { return c.r.Read(b) }
func (c *bytesConn) Write(b []byte) (int, error)      { return len(b), nil }
func (c *bytesConn) Close() error                     { return nil }
func (c *bytesConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *bytesConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *bytesConn) SetDeadline(time.Time) error      { return nil }
func (c *bytesConn) SetReadDeadline(time.Time) error  { return nil }
func (c *bytesConn) SetWriteDeadline(time.Time) error { return nil }

func newBytesClient(input string) *Client {
	conn := &bytesConn{r: strings.NewReader(input)}
	return &Client{
		conn:     conn,
		br:       bufio.NewReader(conn),
		priv:     key.NewPrivate(),
		log:      logger(nil),
		ackPings: true,
		done:     make(chan struct{}),
	}
}

func newReader(c net.Conn) *bufio.Reader { return bufio.NewReader(c) }
