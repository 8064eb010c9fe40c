package lab

import (
	"io"
	"net"
	"sync"
)

// tcpForwarder accepts TCP connections on a loopback port and joins each to
// a new connection to target.
type tcpForwarder struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	conns map[net.Conn]bool // open, of both sides
	wg    sync.WaitGroup
}

// ForwardTCP starts a forwarder from a port of 127.0.0.1 to target,
// stopped by t's cleanup, and returns the address it listens on. Besides
// giving a client in this namespace a loopback address, it gives a test a
// port of its own to fault (nftables rules on it touch no other client).
func ForwardTCP(t T, target string) string {
	t.Helper()
	addr, _ := ForwardTCPStop(t, target)
	return addr
}

// ForwardTCPStop is ForwardTCP that also returns a function to stop the
// forwarder early: its port then refuses connections and the open ones
// are closed, as if the target had gone away.
func ForwardTCPStop(t T, target string) (addr string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	return ln.Addr().String(), ForwardFrom(t, ln, target)
}

// ForwardFrom is ForwardTCPStop on a listener of the caller's, such as one
// in another network namespace; it takes ln over and closes it.
func ForwardFrom(t T, ln net.Listener, target string) (stop func()) {
	f := &tcpForwarder{ln: ln, target: target, conns: map[net.Conn]bool{}}
	f.wg.Add(1)
	go f.serve()
	var once sync.Once
	stop = func() { once.Do(f.close) }
	t.Cleanup(stop)
	return stop
}

func (f *tcpForwarder) serve() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		if !f.track(c) {
			return
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			f.join(c)
		}()
	}
}

// track adds c to the open connections, or closes it and reports false if
// the forwarder is closed.
func (f *tcpForwarder) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.conns == nil {
		c.Close()
		return false
	}
	f.conns[c] = true
	return true
}

func (f *tcpForwarder) untrack(c net.Conn) {
	f.mu.Lock()
	delete(f.conns, c)
	f.mu.Unlock()
	c.Close()
}

func (f *tcpForwarder) join(c net.Conn) {
	defer f.untrack(c)
	u, err := net.Dial("tcp", f.target)
	if err != nil || !f.track(u) {
		return
	}
	defer f.untrack(u)
	done := make(chan struct{})
	go func() {
		io.Copy(u, c)
		u.(*net.TCPConn).CloseWrite()
		close(done)
	}()
	io.Copy(c, u)
	c.(*net.TCPConn).CloseWrite()
	<-done
}

// close stops accepting, closes every open connection and waits for the
// goroutines.
func (f *tcpForwarder) close() {
	f.ln.Close()
	f.mu.Lock()
	for c := range f.conns {
		c.Close()
	}
	f.conns = nil
	f.mu.Unlock()
	f.wg.Wait()
}
