package linkemu

import (
	"io"
	"net"
	"net/netip"
)

// Forward listens on a loopback port in the peer's namespace and relays
// each connection to target, dialed from the caller's namespace (so
// around the emulator). It returns the loopback address; Close stops it.
//
// tailscaled needs it for its control URL: with an http:// URL whose
// host is not a loopback address, it soon insists on port 443 ("TLS
// forced") and loses the lab's control server.
func (p *Path) Forward(target netip.AddrPort) (netip.AddrPort, error) {
	l, err := Listen(p.PeerNS, "tcp4", "127.0.0.1:0")
	if err != nil {
		return netip.AddrPort{}, err
	}
	p.closers = append(p.closers, l.Close)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go relay(c, target)
		}
	}()
	return l.Addr().(*net.TCPAddr).AddrPort(), nil
}

func relay(c net.Conn, target netip.AddrPort) {
	defer c.Close()
	t, err := net.Dial("tcp", target.String())
	if err != nil {
		return
	}
	defer t.Close()
	done := make(chan struct{})
	go func() {
		io.Copy(t, c)
		t.(*net.TCPConn).CloseWrite()
		close(done)
	}()
	io.Copy(c, t)
	c.(*net.TCPConn).CloseWrite()
	<-done
}
