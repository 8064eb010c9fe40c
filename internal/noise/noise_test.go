package noise

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/nettest"

	"github.com/microlink-go/microlink/internal/key"
)

// Vectors produced by Tailscale's controlbase with the same keys and
// ephemerals (see interop/controltest).
const (
	goldenMachine    = "0002030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f60"
	goldenServer     = "6065666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f80818243"
	goldenClientEph  = "0842d4cae8864908e0b8c7520e360aa404427c9053d9a667be544c14e69fa442"
	goldenServerEph  = "88bbcefe09759150e19e652dafa95c07840d1d1ab7d75c79da9265a613282862"
	goldenVersion    = 130
	goldenInitiation = "0082010060be489578ab97bc2fdbc5dc67e03b21a76529927c1abf86800b6fbfd06b2f5e0d540094bec4a0a30303e6562527f41a8e3bed23fb41b273fed8dcef64376829caacd27760dc5ebd016195c463dfa5c019805826974e23ac7f7b92ac503f924552"
	goldenResponse   = "0200306b76b3e853034f76d035e7f64577316f2b4f97a59f8fb3849cbcb9138ada393ed9022de8fa14483af2c95dc0f72b077d"
	// "server hello", "two", "three" sent by the server: counters 0, 1, 2.
	goldenRecords = "04001ce84fc8a46ea3fc11e06f699182c979bfd14f4cbc5e4fe453ea6c0084" +
		"04001347fc3d9e2f91250eb638ac67ae66e1908eaddc" +
		"040015ce5ea28db96948707d7717bbce59d8339b374ad69f"
)

func mustKey(t testing.TB, h string) key.Private {
	t.Helper()
	var k key.Private
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != len(k) {
		t.Fatalf("bad key hex %q", h)
	}
	copy(k[:], b)
	return k
}

func mustHex(t testing.TB, h string) []byte {
	t.Helper()
	b, err := hex.DecodeString(h)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// recorder is a net.Conn that captures writes and serves reads from r.
type recorder struct {
	net.Conn
	r io.Reader
	w bytes.Buffer
}

func (c *recorder) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *recorder) Write(p []byte) (int, error) { return c.w.Write(p) }
func (c *recorder) Close() error                { return nil }

func TestGolden(t *testing.T) {
	machine, server := mustKey(t, goldenMachine), mustKey(t, goldenServer)
	h, err := newInitiator(machine, server.MachinePublic(), goldenVersion, mustKey(t, goldenClientEph))
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(h.Message()); got != goldenInitiation {
		t.Fatalf("initiation\n got %s\nwant %s", got, goldenInitiation)
	}

	srv := &recorder{r: bytes.NewReader(nil)}
	sc, err := accept(srv, server, h.Message(), mustKey(t, goldenServerEph))
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(srv.w.Bytes()); got != goldenResponse {
		t.Fatalf("response\n got %s\nwant %s", got, goldenResponse)
	}
	if sc.Peer() != machine.MachinePublic() || sc.ProtocolVersion() != goldenVersion {
		t.Fatalf("server sees peer %v version %d", sc.Peer(), sc.ProtocolVersion())
	}
	srv.w.Reset()
	for _, m := range []string{"server hello", "two", "three"} {
		if _, err := sc.Write([]byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	if got := hex.EncodeToString(srv.w.Bytes()); got != goldenRecords {
		t.Fatalf("records\n got %s\nwant %s", got, goldenRecords)
	}

	stream := append(mustHex(t, goldenResponse), mustHex(t, goldenRecords)...)
	cc, err := h.Finish(&recorder{r: bytes.NewReader(stream)})
	if err != nil {
		t.Fatal(err)
	}
	if cc.HandshakeHash() != sc.HandshakeHash() {
		t.Fatal("handshake hashes differ")
	}
	got, err := io.ReadAll(cc)
	if string(got) != "server hellotwothree" || err != nil {
		t.Fatalf("client read %q, %v", got, err)
	}
	if _, err := h.Finish(&recorder{r: bytes.NewReader(stream)}); err == nil {
		t.Fatal("second Finish succeeded")
	}
}

func TestPrologue(t *testing.T) {
	if got := string(Prologue(148)); got != "Tailscale Control Protocol v148" {
		t.Fatalf("prologue %q", got)
	}
}

// pair returns the two ends of an established session over net.Pipe.
func pair(t testing.TB) (client, server *Conn) {
	t.Helper()
	machine, srvKey := key.NewPrivate(), key.NewPrivate()
	a, b := net.Pipe()
	type res struct {
		c   *Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := Accept(b, srvKey, nil)
		ch <- res{c, err}
	}()
	client, err := Client(a, machine, srvKey.MachinePublic(), 99)
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.c.Peer() != machine.MachinePublic() || client.Peer() != srvKey.MachinePublic() {
		t.Fatal("peers not reported")
	}
	return client, r.c
}

func TestRoundTripMultiRecord(t *testing.T) {
	client, server := pair(t)
	defer client.Close()
	defer server.Close()

	// Each direction: three small writes and one that spans three records.
	big := make([]byte, 2*MaxPlaintextSize+100)
	for i := range big {
		big[i] = byte(i * 7)
	}
	msgs := [][]byte{[]byte("a"), []byte("bb"), []byte("ccc"), big}
	var want []byte
	for _, m := range msgs {
		want = append(want, m...)
	}
	check := func(name string, w, r *Conn) {
		errc := make(chan error, 1)
		go func() {
			for _, m := range msgs {
				if n, err := w.Write(m); err != nil || n != len(m) {
					errc <- errors.Join(err, io.ErrShortWrite)
					return
				}
			}
			errc <- nil
		}()
		got := make([]byte, len(want))
		if _, err := io.ReadFull(r, got); err != nil {
			t.Fatalf("%s: read: %v", name, err)
		}
		if err := <-errc; err != nil {
			t.Fatalf("%s: write: %v", name, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: data mismatch", name)
		}
	}
	check("client to server", client, server)
	check("server to client", server, client)
}

func TestRecordSizes(t *testing.T) {
	_, server := pair(t)
	rec := &recorder{r: bytes.NewReader(nil)}
	server.conn = rec
	server.Write(make([]byte, MaxPlaintextSize+1))
	b := rec.w.Bytes()
	if len(b) != MaxRecordSize+headerLen+1+16 {
		t.Fatalf("wrote %d bytes", len(b))
	}
	if b[0] != 4 || int(b[1])<<8|int(b[2]) != MaxCiphertextSize {
		t.Fatalf("first record header % x", b[:3])
	}
	second := b[MaxRecordSize:]
	if second[0] != 4 || int(second[1])<<8|int(second[2]) != 17 {
		t.Fatalf("second record header % x", second[:3])
	}
}

func TestServerError(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	go func() {
		var init [InitiationSize]byte
		io.ReadFull(b, init[:])
		WriteError(b, "go away")
		b.Close()
	}()
	_, err := Client(a, key.NewPrivate(), key.NewPrivate().MachinePublic(), 1)
	var se ServerError
	if !errors.As(err, &se) || string(se) != "go away" {
		t.Fatalf("err = %v", err)
	}
}

func TestWrongServerKey(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	errc := make(chan error, 1)
	go func() {
		_, err := Accept(b, key.NewPrivate(), nil)
		errc <- err
		b.Close()
	}()
	if _, err := Client(a, key.NewPrivate(), key.NewPrivate().MachinePublic(), 1); err == nil {
		t.Fatal("client handshake succeeded against wrong key")
	}
	if err := <-errc; err == nil {
		t.Fatal("server accepted initiation for another key")
	}
}

func TestTamperedResponse(t *testing.T) {
	machine, server := mustKey(t, goldenMachine), mustKey(t, goldenServer)
	for i := 3; i < ResponseSize; i += 7 {
		h, _ := newInitiator(machine, server.MachinePublic(), goldenVersion, mustKey(t, goldenClientEph))
		resp := mustHex(t, goldenResponse)
		resp[i] ^= 1
		if _, err := h.Finish(&recorder{r: bytes.NewReader(resp)}); err == nil {
			t.Fatalf("tampered byte %d accepted", i)
		}
	}
}

// clientWithStream returns the golden client session reading stream
// after the handshake response.
func clientWithStream(t testing.TB, stream []byte) *Conn {
	machine, server := mustKey(t, goldenMachine), mustKey(t, goldenServer)
	h, err := newInitiator(machine, server.MachinePublic(), goldenVersion, mustKey(t, goldenClientEph))
	if err != nil {
		t.Fatal(err)
	}
	c, err := h.Finish(&recorder{r: io.MultiReader(bytes.NewReader(mustHex(t, goldenResponse)), bytes.NewReader(stream))})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestBadRecordIsFatal(t *testing.T) {
	recs := mustHex(t, goldenRecords)
	for _, tc := range []struct {
		name string
		mod  func(b []byte)
	}{
		{"auth", func(b []byte) { b[10] ^= 0x80 }},
		{"type", func(b []byte) { b[0] = 5 }},
		{"short", func(b []byte) { b[1], b[2] = 0, 15 }},
		{"long", func(b []byte) { b[1], b[2] = 0x10, 0 }},
	} {
		b := bytes.Clone(recs)
		tc.mod(b)
		c := clientWithStream(t, b)
		buf := make([]byte, 100)
		_, err1 := c.Read(buf)
		_, err2 := c.Read(buf)
		if err1 == nil || err2 == nil || err1 == io.EOF {
			t.Errorf("%s: errors %v, %v", tc.name, err1, err2)
		}
	}
	// Reordered records fail: the counter is part of the nonce.
	c := clientWithStream(t, recs[31:])
	if _, err := c.Read(make([]byte, 100)); !errors.Is(err, ErrBadRecord) {
		t.Fatalf("reordered: %v", err)
	}
}

func TestTruncatedStream(t *testing.T) {
	recs := mustHex(t, goldenRecords)
	c := clientWithStream(t, recs[:40])
	got, err := io.ReadAll(c)
	if string(got) != "server hello" || err != io.ErrUnexpectedEOF {
		t.Fatalf("got %q, %v", got, err)
	}
}

func TestCipherExhausted(t *testing.T) {
	client, server := pair(t)
	defer client.Close()
	defer server.Close()
	client.tx.ctr = invalidNonce - 1
	server.rx.ctr = invalidNonce - 1
	go client.Write([]byte("last"))
	buf := make([]byte, 10)
	if n, err := server.Read(buf); err != nil || string(buf[:n]) != "last" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	if _, err := client.Write([]byte("x")); !errors.Is(err, ErrCipherExhausted) {
		t.Fatalf("write after exhaustion: %v", err)
	}
	server.rx.buf = [MaxRecordSize]byte{4, 0, 16}
	server.rx.n, server.rx.next = 19, 0
	if _, err := server.Read(buf); !errors.Is(err, ErrCipherExhausted) {
		t.Fatalf("read after exhaustion: %v", err)
	}
}

func TestReadDeadlineNotFatal(t *testing.T) {
	client, server := pair(t)
	defer client.Close()
	defer server.Close()
	server.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	if _, err := server.Read(make([]byte, 1)); err == nil {
		t.Fatal("no timeout")
	}
	server.SetReadDeadline(time.Time{})
	go client.Write([]byte("ok"))
	buf := make([]byte, 2)
	if _, err := io.ReadFull(server, buf); err != nil || string(buf) != "ok" {
		t.Fatalf("after timeout: %q %v", buf, err)
	}
}

func TestConcurrentReadWrite(t *testing.T) {
	client, server := pair(t)
	defer client.Close()
	defer server.Close()
	const n = 200
	var wg sync.WaitGroup
	for _, c := range []*Conn{client, server} {
		wg.Add(2)
		go func() {
			defer wg.Done()
			msg := bytes.Repeat([]byte("z"), 1000)
			for range n {
				if _, err := c.Write(msg); err != nil {
					t.Error(err)
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			if _, err := io.ReadFull(c, make([]byte, n*1000)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
}

func TestNetConn(t *testing.T) {
	nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
		client, server := pair(t)
		return client, server, func() { client.Close(); server.Close() }, nil
	})
}

// sink is a net.Conn that discards writes and reads from a looping buffer.
type sink struct {
	net.Conn
	data []byte
	off  int
}

func (s *sink) Write(p []byte) (int, error) { return len(p), nil }
func (s *sink) Read(p []byte) (int, error) {
	if s.off == len(s.data) {
		s.off = 0
	}
	n := copy(p, s.data[s.off:])
	s.off += n
	return n, nil
}

func TestNoAllocs(t *testing.T) {
	client, server := pair(t)
	// Capture 64 records from the server to replay on the client's reader.
	rec := &recorder{r: bytes.NewReader(nil)}
	server.conn = rec
	msg := make([]byte, 1000)
	for range 64 {
		server.Write(msg)
	}
	s := &sink{data: rec.w.Bytes()}
	client.conn = s
	if a := testing.AllocsPerRun(50, func() { client.Write(msg) }); a != 0 {
		t.Errorf("Write allocates %v times", a)
	}
	buf := make([]byte, 1000)
	if a := testing.AllocsPerRun(50, func() {
		if _, err := io.ReadFull(client, buf); err != nil {
			t.Fatal(err)
		}
	}); a != 0 {
		t.Errorf("Read allocates %v times", a)
	}
}

func BenchmarkWrite(b *testing.B) {
	client, _ := pair(b)
	client.conn = &sink{}
	msg := make([]byte, 16<<10)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		client.Write(msg)
	}
}
