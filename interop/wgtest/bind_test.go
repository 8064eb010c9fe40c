package wgtest

import (
	"net"
	"net/netip"
	"os"
	"sync"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/tun"
)

// chanBind is a conn.Bind for wireguard-go whose "network" is two
// channels: in carries messages to wireguard-go, out carries messages
// wireguard-go sends.
type chanBind struct {
	in  chan []byte
	out chan []byte

	mu     sync.Mutex
	closed chan struct{}
}

func newChanBind() *chanBind {
	return &chanBind{in: make(chan []byte, 256), out: make(chan []byte, 256)}
}

// endpoint is the only peer address wireguard-go knows: our device.
type endpoint struct{}

func (endpoint) ClearSrc()           {}
func (endpoint) SrcToString() string { return "" }
func (endpoint) DstToString() string { return "127.0.0.1:1" }
func (endpoint) DstToBytes() []byte  { return []byte{127, 0, 0, 1, 0, 1} }
func (endpoint) DstIP() netip.Addr   { return netip.AddrFrom4([4]byte{127, 0, 0, 1}) }
func (endpoint) SrcIP() netip.Addr   { return netip.Addr{} }

func (b *chanBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed != nil {
		return nil, 0, conn.ErrBindAlreadyOpen
	}
	closed := make(chan struct{})
	b.closed = closed
	recv := func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		select {
		case <-closed:
			return 0, net.ErrClosed
		case m := <-b.in:
			sizes[0] = copy(bufs[0], m)
			eps[0] = endpoint{}
			return 1, nil
		}
	}
	return []conn.ReceiveFunc{recv}, 1, nil
}

func (b *chanBind) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed != nil {
		close(b.closed)
		b.closed = nil
	}
	return nil
}

func (b *chanBind) SetMark(uint32) error { return nil }
func (b *chanBind) BatchSize() int       { return 1 }

func (b *chanBind) ParseEndpoint(string) (conn.Endpoint, error) { return endpoint{}, nil }

func (b *chanBind) Send(bufs [][]byte, _ conn.Endpoint) error {
	for _, buf := range bufs {
		select {
		case b.out <- append([]byte(nil), buf...):
		default: // a full network loses packets
		}
	}
	return nil
}

// chanTUN is a tun.Device backed by channels: packets sent into toWG are
// read by wireguard-go as if the OS routed them; packets wireguard-go
// decrypts arrive on fromWG.
type chanTUN struct {
	toWG   chan []byte
	fromWG chan []byte
	events chan tun.Event
	once   sync.Once
	closed chan struct{}
}

func newChanTUN() *chanTUN {
	t := &chanTUN{
		toWG:   make(chan []byte, 64),
		fromWG: make(chan []byte, 64),
		events: make(chan tun.Event, 1),
		closed: make(chan struct{}),
	}
	t.events <- tun.EventUp
	return t
}

func (t *chanTUN) File() *os.File { return nil }

func (t *chanTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	select {
	case <-t.closed:
		return 0, os.ErrClosed
	case p := <-t.toWG:
		sizes[0] = copy(bufs[0][offset:], p)
		return 1, nil
	}
}

func (t *chanTUN) Write(bufs [][]byte, offset int) (int, error) {
	for _, b := range bufs {
		select {
		case t.fromWG <- append([]byte(nil), b[offset:]...):
		case <-t.closed:
			return 0, os.ErrClosed
		default:
		}
	}
	return len(bufs), nil
}

func (t *chanTUN) MTU() (int, error)        { return 1280, nil }
func (t *chanTUN) Name() (string, error)    { return "chantun", nil }
func (t *chanTUN) Events() <-chan tun.Event { return t.events }
func (t *chanTUN) BatchSize() int           { return 1 }

func (t *chanTUN) Close() error {
	t.once.Do(func() {
		close(t.closed)
		close(t.events)
	})
	return nil
}
