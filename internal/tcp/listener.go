package tcp

import (
	"net"
	"net/netip"
	"sync"
)

// Listener accepts connections to one port. It implements net.Listener.
type Listener struct {
	s       *Stack
	port    uint16
	acceptq chan *Conn // capacity: the backlog
	done    chan struct{}
	once    sync.Once

	closed bool // guarded by s.mu
}

// Accept waits for and returns the next established connection.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.acceptq:
		return c, nil
	case <-l.done:
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: net.ErrClosed}
	}
}

// full reports whether the backlog is full.
func (l *Listener) full() bool { return len(l.acceptq) >= cap(l.acceptq) }

// enqueue hands an established connection to Accept. Called with c.mu
// held; false if the listener is closed or its backlog full.
func (l *Listener) enqueue(c *Conn) bool {
	s := l.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.halfOpen {
		c.halfOpen = false
		s.halfOpen--
	}
	if l.closed {
		return false
	}
	select {
	case l.acceptq <- c:
		return true
	default:
		return false
	}
}

// Close stops listening and resets connections not yet accepted.
func (l *Listener) Close() error {
	l.once.Do(func() {
		s := l.s
		s.mu.Lock()
		l.closed = true
		if s.listeners[l.port] == l {
			delete(s.listeners, l.port)
		}
		s.mu.Unlock()
		close(l.done)
		for {
			select {
			case c := <-l.acceptq:
				c.mu.Lock()
				c.abort(ErrAborted)
				c.unlock()
			default:
				return
			}
		}
	})
	return nil
}

// Addr returns the listening port on the unspecified address.
func (l *Listener) Addr() net.Addr {
	return net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.IPv4Unspecified(), l.port))
}

// Port returns the listening port.
func (l *Listener) Port() uint16 { return l.port }
