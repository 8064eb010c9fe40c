package proxy

import (
	"bufio"
	"context"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
)

// SOCKS5Config configures a SOCKS5 server.
type SOCKS5Config struct {
	Dial Dialer
	// Username and Password, when set, are required from clients
	// (RFC 1929); otherwise no authentication is asked for.
	Username, Password string
	Logger             *slog.Logger
}

// SOCKS5 is a running SOCKS5 server (RFC 1928): CONNECT and UDP
// ASSOCIATE; BIND is refused.
type SOCKS5 struct {
	*server
	cfg SOCKS5Config
}

// ServeSOCKS5 serves SOCKS5 on ln until Close.
func ServeSOCKS5(ln net.Listener, cfg SOCKS5Config) *SOCKS5 {
	s := &SOCKS5{cfg: cfg}
	s.server = newServer(ln, cfg.Logger, s.serveConn)
	return s
}

// SOCKS5 constants.
const (
	socksVersion = 5

	methodNone     = 0
	methodPassword = 2
	methodNoneOK   = 0xff

	cmdConnect      = 1
	cmdBind         = 2
	cmdUDPAssociate = 3

	atypIPv4   = 1
	atypDomain = 3
	atypIPv6   = 4

	repSuccess             = 0
	repGeneralFailure      = 1
	repNetworkUnreachable  = 3
	repHostUnreachable     = 4
	repConnectionRefused   = 5
	repCommandNotSupported = 7
	repAddrNotSupported    = 8
)

var errSOCKS = errors.New("socks5: malformed request")

func (s *SOCKS5) serveConn(ctx context.Context, c net.Conn) {
	c.SetDeadline(time.Now().Add(handshakeTimeout))
	br := bufio.NewReaderSize(c, 512)
	if err := s.negotiate(br, c); err != nil {
		s.logger.Debug("socks5: handshake", "client", c.RemoteAddr(), "err", err)
		return
	}
	cmd, host, port, err := readRequest(br)
	if err != nil {
		rep := byte(repGeneralFailure)
		if errors.Is(err, errAtyp) {
			rep = repAddrNotSupported
		}
		writeReply(c, rep, netip.AddrPort{})
		s.logger.Debug("socks5: request", "client", c.RemoteAddr(), "err", err)
		return
	}
	target := net.JoinHostPort(host, strconv.Itoa(int(port)))
	switch cmd {
	case cmdConnect:
		c.SetDeadline(time.Time{})
		dctx, cancel := context.WithTimeout(ctx, dialTimeout)
		up, err := s.cfg.Dial(dctx, "tcp", target)
		cancel()
		if err != nil {
			s.logger.Debug("socks5: connect", "target", target, "err", err)
			writeReply(c, dialFailure(err), netip.AddrPort{})
			return
		}
		defer up.Close()
		local, _ := netip.ParseAddrPort(up.LocalAddr().String())
		if err := writeReply(c, repSuccess, local); err != nil {
			return
		}
		pending, _ := br.Peek(br.Buffered())
		relay(c, up, pending)
	case cmdUDPAssociate:
		c.SetDeadline(time.Time{})
		s.udpAssociate(ctx, c)
	default:
		writeReply(c, repCommandNotSupported, netip.AddrPort{})
	}
}

// negotiate reads the client's methods and, when a password is set,
// checks its credentials.
func (s *SOCKS5) negotiate(br *bufio.Reader, c net.Conn) error {
	var hdr [2]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return err
	}
	if hdr[0] != socksVersion || hdr[1] == 0 {
		return errSOCKS
	}
	methods := make([]byte, hdr[1])
	if _, err := io.ReadFull(br, methods); err != nil {
		return err
	}
	want := byte(methodNone)
	if s.cfg.Username != "" || s.cfg.Password != "" {
		want = methodPassword
	}
	ok := false
	for _, m := range methods {
		ok = ok || m == want
	}
	if !ok {
		c.Write([]byte{socksVersion, methodNoneOK})
		return errors.New("socks5: no acceptable authentication method")
	}
	if _, err := c.Write([]byte{socksVersion, want}); err != nil {
		return err
	}
	if want == methodNone {
		return nil
	}
	// RFC 1929: VER 1, ULEN, UNAME, PLEN, PASSWD.
	ver, err := br.ReadByte()
	if err != nil || ver != 1 {
		return errSOCKS
	}
	user, err := readShortString(br)
	if err != nil {
		return err
	}
	pass, err := readShortString(br)
	if err != nil {
		return err
	}
	uok := subtle.ConstantTimeCompare([]byte(user), []byte(s.cfg.Username))
	pok := subtle.ConstantTimeCompare([]byte(pass), []byte(s.cfg.Password))
	if uok&pok != 1 {
		c.Write([]byte{1, 1})
		return errors.New("socks5: wrong username or password")
	}
	_, err = c.Write([]byte{1, 0})
	return err
}

func readShortString(br *bufio.Reader) (string, error) {
	n, err := br.ReadByte()
	if err != nil {
		return "", err
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(br, b); err != nil {
		return "", err
	}
	return string(b), nil
}

var errAtyp = errors.New("socks5: address type not supported")

// readRequest reads VER CMD RSV ATYP DST.ADDR DST.PORT.
func readRequest(br *bufio.Reader) (cmd byte, host string, port uint16, err error) {
	var hdr [3]byte
	if _, err = io.ReadFull(br, hdr[:]); err != nil {
		return
	}
	if hdr[0] != socksVersion || hdr[2] != 0 {
		err = errSOCKS
		return
	}
	cmd = hdr[1]
	host, port, _, err = readAddr(br)
	return
}

// readAddr reads ATYP DST.ADDR DST.PORT.
func readAddr(r io.ByteReader) (host string, port uint16, atyp byte, err error) {
	rd := r.(io.Reader)
	if atyp, err = r.ReadByte(); err != nil {
		return
	}
	switch atyp {
	case atypIPv4:
		var b [4]byte
		if _, err = io.ReadFull(rd, b[:]); err != nil {
			return
		}
		host = netip.AddrFrom4(b).String()
	case atypIPv6:
		var b [16]byte
		if _, err = io.ReadFull(rd, b[:]); err != nil {
			return
		}
		host = netip.AddrFrom16(b).Unmap().String()
	case atypDomain:
		var n byte
		if n, err = r.ReadByte(); err != nil {
			return
		}
		b := make([]byte, n)
		if _, err = io.ReadFull(rd, b); err != nil {
			return
		}
		host = string(b)
		if n == 0 || !validHost(host) {
			err = errSOCKS
			return
		}
	default:
		err = errAtyp
		return
	}
	var pb [2]byte
	if _, err = io.ReadFull(rd, pb[:]); err != nil {
		return
	}
	port = binary.BigEndian.Uint16(pb[:])
	return
}

// validHost accepts the characters of host names.
func validHost(h string) bool {
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return true
}

// appendAddr appends ATYP ADDR PORT for ap (0.0.0.0:0 when invalid).
func appendAddr(b []byte, ap netip.AddrPort) []byte {
	a := ap.Addr().Unmap()
	switch {
	case a.Is6():
		b = append(b, atypIPv6)
		s := a.As16()
		b = append(b, s[:]...)
	case a.Is4():
		b = append(b, atypIPv4)
		s := a.As4()
		b = append(b, s[:]...)
	default:
		b = append(b, atypIPv4, 0, 0, 0, 0)
	}
	return binary.BigEndian.AppendUint16(b, ap.Port())
}

func writeReply(c net.Conn, rep byte, bound netip.AddrPort) error {
	_, err := c.Write(appendAddr([]byte{socksVersion, rep, 0}, bound))
	return err
}

// dialFailure maps a dial error to a reply code.
func dialFailure(err error) byte {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return repHostUnreachable
	case containsAny(err.Error(), "refused", "reset"):
		return repConnectionRefused
	case containsAny(err.Error(), "no such host", "no addresses", "no node", "not in the tailnet"):
		return repHostUnreachable
	case containsAny(err.Error(), "no route", "unreachable", "no peer", "no own address"):
		return repNetworkUnreachable
	}
	return repGeneralFailure
}

func containsAny(s string, subs ...string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// UDP ASSOCIATE limits.
const (
	maxUDPTargets = 64              // destinations one association may use at once
	udpIdle       = 2 * time.Minute // a destination unused this long is closed
)

// udpAssociate relays datagrams between the client and the tailnet for
// as long as the control connection c stays open (RFC 1928 section 7).
func (s *SOCKS5) udpAssociate(ctx context.Context, c net.Conn) {
	clientIP, _ := netip.ParseAddrPort(c.RemoteAddr().String())
	localIP, err := netip.ParseAddrPort(c.LocalAddr().String())
	var pc *net.UDPConn
	if err == nil {
		// The relay listens on the address the client reached us at.
		pc, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(localIP.Addr(), 0)))
	}
	if err != nil {
		writeReply(c, repGeneralFailure, netip.AddrPort{})
		return
	}
	if !s.track(pc) {
		pc.Close()
		return
	}
	defer s.untrack(pc)
	defer pc.Close()
	bound, _ := netip.ParseAddrPort(pc.LocalAddr().String())
	if err := writeReply(c, repSuccess, bound); err != nil {
		return
	}
	a := &association{s: s, ctx: ctx, pc: pc, clientIP: clientIP.Addr().Unmap(), targets: map[string]*udpTarget{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.readClient()
	}()
	io.Copy(io.Discard, c) // until the client closes the control connection
	pc.Close()
	<-done
	a.closeAll()
}

type association struct {
	s        *SOCKS5
	ctx      context.Context
	pc       *net.UDPConn
	clientIP netip.Addr

	mu      sync.Mutex
	client  netip.AddrPort // the client's UDP address, from its first datagram
	targets map[string]*udpTarget
	wg      sync.WaitGroup
}

type udpTarget struct {
	conn net.Conn
	hdr  []byte // the reply header: RSV FRAG ATYP ADDR PORT
	used time.Time
}

// readClient reads the client's datagrams and sends each to its target.
func (a *association) readClient() {
	buf := make([]byte, 65535)
	for {
		n, from, err := a.pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		if from.Addr() != a.clientIP {
			continue // only the client that asked may use the relay
		}
		a.mu.Lock()
		if !a.client.IsValid() {
			a.client = from
		}
		ok := a.client == from
		a.mu.Unlock()
		if !ok {
			continue
		}
		a.forward(buf[:n])
	}
}

// forward parses RSV RSV FRAG ATYP ADDR PORT DATA and sends DATA;
// fragments and malformed datagrams are dropped.
func (a *association) forward(d []byte) {
	if len(d) < 4 || d[0] != 0 || d[1] != 0 || d[2] != 0 {
		return
	}
	r := &byteReader{b: d[3:]}
	host, port, _, err := readAddr(r)
	if err != nil {
		return
	}
	payload := r.b
	key := net.JoinHostPort(host, strconv.Itoa(int(port)))
	a.mu.Lock()
	t := a.targets[key]
	a.mu.Unlock()
	if t == nil {
		if t = a.open(key, d[:len(d)-len(payload)]); t == nil {
			return
		}
	}
	a.mu.Lock()
	t.used = time.Now()
	a.mu.Unlock()
	t.conn.Write(payload)
}

// open dials a new target and starts relaying its answers.
func (a *association) open(key string, hdr []byte) *udpTarget {
	a.mu.Lock()
	if len(a.targets) >= maxUDPTargets {
		a.expireLocked()
	}
	full := len(a.targets) >= maxUDPTargets
	a.mu.Unlock()
	if full {
		return nil
	}
	ctx, cancel := context.WithTimeout(a.ctx, dialTimeout)
	conn, err := a.s.cfg.Dial(ctx, "udp", key)
	cancel()
	if err != nil {
		a.s.logger.Debug("socks5: udp", "target", key, "err", err)
		return nil
	}
	t := &udpTarget{conn: conn, hdr: append([]byte(nil), hdr...), used: time.Now()}
	// Replies name the target as the client named it; a name is
	// answered with the address it resolved to.
	if ap, err := netip.ParseAddrPort(conn.RemoteAddr().String()); err == nil {
		t.hdr = appendAddr([]byte{0, 0, 0}, ap)
	}
	a.mu.Lock()
	if old := a.targets[key]; old != nil {
		a.mu.Unlock()
		conn.Close()
		return old
	}
	a.targets[key] = t
	a.mu.Unlock()
	a.wg.Go(func() { a.readTarget(t) })
	return t
}

// readTarget relays a target's datagrams back to the client.
func (a *association) readTarget(t *udpTarget) {
	buf := make([]byte, 65535)
	n0 := copy(buf, t.hdr)
	for {
		n, err := t.conn.Read(buf[n0:])
		if err != nil {
			return
		}
		a.mu.Lock()
		client := a.client
		t.used = time.Now()
		a.mu.Unlock()
		a.pc.WriteToUDPAddrPort(buf[:n0+n], client)
	}
}

// expireLocked closes targets idle for udpIdle. a.mu is held.
func (a *association) expireLocked() {
	for k, t := range a.targets {
		if time.Since(t.used) > udpIdle {
			t.conn.Close()
			delete(a.targets, k)
		}
	}
}

func (a *association) closeAll() {
	a.mu.Lock()
	for k, t := range a.targets {
		t.conn.Close()
		delete(a.targets, k)
	}
	a.mu.Unlock()
	a.wg.Wait()
}

// byteReader reads a byte slice for readAddr.
type byteReader struct{ b []byte }

func (r *byteReader) ReadByte() (byte, error) {
	if len(r.b) == 0 {
		return 0, io.ErrUnexpectedEOF
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c, nil
}

func (r *byteReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.ErrUnexpectedEOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}
