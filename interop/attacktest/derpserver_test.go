package attacktest

import (
	"bufio"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/nacl/box"

	"github.com/microlink-go/microlink/internal/key"
	"github.com/microlink-go/microlink/interop/lab"
)

// DERP frame types (protocol version 2), as the server writes them.
const (
	frameServerKey   = 0x01
	frameClientInfo  = 0x02
	frameServerInfo  = 0x03
	frameSendPacket  = 0x04
	frameRecvPacket  = 0x05
	framePing        = 0x12
	framePong        = 0x13
	frameHealth      = 0x14
	derpMagic        = "DERP🔑"
	derpMaxFrameSize = 1 << 20
)

// badDERP is a DERP server of the lab's second region that serves the
// hostile node's home: it relays what clients send to the hostile node
// to onPacket, and when told to, it sends its clients frames of every
// type with wrong lengths.
type badDERP struct {
	t        *testing.T
	priv     key.Private
	ln       net.Listener
	onPacket func(src key.NodePublic, pkt []byte) // packets clients send to the hostile node
	hostile  key.NodePublic

	misbehave atomic.Bool
	accepted  atomic.Int64 // connections
	framesOut atomic.Int64 // malformed frames written
	wg        sync.WaitGroup

	mu    sync.Mutex
	conns map[*derpConn]bool
}

type derpConn struct {
	c   net.Conn
	wmu sync.Mutex
	key key.NodePublic
}

func startBadDERP(t *testing.T, hostile key.NodePublic, onPacket func(key.NodePublic, []byte)) *badDERP {
	cert := lab.SelfSignedCert(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	s := &badDERP{t: t, priv: key.NewPrivate(), ln: ln, onPacket: onPacket, hostile: hostile, conns: map[*derpConn]bool{}}
	s.wg.Add(1)
	go s.serve()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

// Port is the server's TCP port.
func (s *badDERP) Port() int { return s.ln.Addr().(*net.TCPAddr).Port }

func (s *badDERP) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.accepted.Add(1)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer c.Close()
			dc := &derpConn{c: c}
			s.mu.Lock()
			s.conns[dc] = true
			s.mu.Unlock()
			defer func() {
				s.mu.Lock()
				delete(s.conns, dc)
				s.mu.Unlock()
			}()
			s.handle(dc)
		}()
	}
}

func (dc *derpConn) writeFrame(t byte, payload []byte) error {
	dc.wmu.Lock()
	defer dc.wmu.Unlock()
	dc.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	var h [5]byte
	h[0] = t
	binary.BigEndian.PutUint32(h[1:], uint32(len(payload)))
	if _, err := dc.c.Write(h[:]); err != nil {
		return err
	}
	_, err := dc.c.Write(payload)
	return err
}

// writeHeader writes only a frame header announcing n bytes.
func (dc *derpConn) writeHeader(t byte, n uint32) error {
	dc.wmu.Lock()
	defer dc.wmu.Unlock()
	var h [5]byte
	h[0] = t
	binary.BigEndian.PutUint32(h[1:], n)
	_, err := dc.c.Write(h[:])
	return err
}

// handle runs the DERP upgrade and handshake and then relays, and, while
// s.misbehave is set, abuses the client.
func (s *badDERP) handle(dc *derpConn) {
	br := bufio.NewReader(dc.c)
	dc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		if strings.TrimSpace(line) == "" {
			break
		}
	}
	io.WriteString(dc.c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\nConnection: Upgrade\r\nDerp-Version: 2\r\n\r\n")
	pub := s.priv.Public()
	if dc.writeFrame(frameServerKey, append([]byte(derpMagic), pub[:]...)) != nil {
		return
	}
	t, p, err := readFrame(br)
	if err != nil || t != frameClientInfo || len(p) < 32 {
		return
	}
	dc.key = key.NodePublic(p[:32])
	var nonce [24]byte
	rand.Read(nonce[:])
	info := box.Seal(nonce[:], []byte(`{"version":2}`), &nonce, (*[32]byte)(&dc.key), (*[32]byte)(&s.priv))
	if dc.writeFrame(frameServerInfo, info) != nil {
		return
	}
	dc.c.SetReadDeadline(time.Time{})
	done := make(chan struct{})
	defer close(done)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.abuse(dc, done)
	}()
	for {
		t, p, err := readFrame(br)
		if err != nil {
			return
		}
		switch t {
		case frameSendPacket:
			if len(p) >= 32 && key.NodePublic(p[:32]) == s.hostile && s.onPacket != nil {
				s.onPacket(dc.key, p[32:])
			}
		case framePing:
			if len(p) == 8 {
				dc.writeFrame(framePong, p)
			}
		}
	}
}

// abuse sends dc malformed frames while s.misbehave is set, until done.
func (s *badDERP) abuse(dc *derpConn, done <-chan struct{}) {
	junk := make([]byte, derpMaxFrameSize)
	rand.Read(junk)
	bigHealth := []byte(strings.Repeat("x", derpMaxFrameSize))
	lengths := []int{0, 1, 7, 8, 23, 24, 31, 32, 33, 50, 51, 100, 4097, 64<<10 + 33}
	for {
		select {
		case <-done:
			return
		case <-time.After(10 * time.Millisecond):
		}
		if !s.misbehave.Load() {
			continue
		}
		// One round: every frame type, every wrong length.
		for t := 0; t <= 0x20; t++ {
			if t == frameServerKey || t == frameServerInfo {
				continue // below, with payloads that fail differently
			}
			for _, n := range lengths {
				if dc.writeFrame(byte(t), junk[:n]) != nil {
					return
				}
				s.framesOut.Add(1)
			}
		}
		for _, n := range []int{0, 24, 40, 200} {
			dc.writeFrame(frameServerInfo, junk[:n])
			dc.writeFrame(frameServerKey, junk[:n])
			s.framesOut.Add(2)
		}
		// Health: a megabyte, the same problem over and over, then none.
		dc.writeFrame(frameHealth, bigHealth)
		for range 100 {
			dc.writeFrame(frameHealth, []byte("the same problem"))
		}
		dc.writeFrame(frameHealth, nil)
		s.framesOut.Add(102)
		// Packets from keys the client has never heard of.
		for range 200 {
			src := key.NewPrivate().NodePublic()
			dc.writeFrame(frameRecvPacket, append(src[:], junk[:100]...))
		}
		s.framesOut.Add(200)
		// Last, a frame over the size limit: the client must hang up.
		if dc.writeHeader(0x55, derpMaxFrameSize+1) != nil {
			return
		}
		s.framesOut.Add(1)
	}
}

func readFrame(br *bufio.Reader) (byte, []byte, error) {
	var h [5]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(h[1:])
	if n > derpMaxFrameSize {
		return 0, nil, errors.New("frame too large")
	}
	p := make([]byte, n)
	_, err := io.ReadFull(br, p)
	return h[0], p, err
}
