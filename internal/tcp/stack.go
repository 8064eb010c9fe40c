package tcp

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/microlink-go/microlink/internal/bufpool"
)

// Errors of connections and of the stack. They reach the applications
// that use the connections, so they read like the errors of the kernel's
// TCP and match its errno with errors.Is (syscall.ECONNREFUSED and so on);
// a closed stack's match net.ErrClosed.
var (
	ErrClosed  = fmt.Errorf("TCP stack closed: %w", net.ErrClosed)
	ErrRefused = &errnoError{errno: syscall.ECONNREFUSED}
	ErrReset   = &errnoError{errno: syscall.ECONNRESET}
	ErrTimeout = &errnoError{syscall.ETIMEDOUT, "no acknowledgement after repeated retransmissions"}
	ErrAborted = &errnoError{errno: syscall.ECONNABORTED}
	errTooMany = &errnoError{syscall.ENOBUFS, "too many TCP connections"}
	errNoPorts = &errnoError{syscall.EADDRNOTAVAIL, "no free local port"}
)

// errnoError is an error the kernel's TCP would report with errno.
type errnoError struct {
	errno  syscall.Errno
	detail string
}

func (e *errnoError) Error() string {
	if e.detail == "" {
		return e.errno.Error()
	}
	return e.errno.Error() + ": " + e.detail
}

func (e *errnoError) Unwrap() error { return e.errno }
func (e *errnoError) Timeout() bool { return e.errno.Timeout() }

// connID is a connection's four-tuple.
type connID struct {
	local, remote netip.AddrPort
}

// Stats are a stack's counters.
type Stats struct {
	SegmentsIn, SegmentsOut uint64
	Retransmits             uint64 // segments sent again: fast, after a timeout, and loss probes
	Timeouts                uint64 // retransmission timer expiries
	Recoveries              uint64 // fast recoveries entered
	LossProbes              uint64 // tail loss probes sent (RFC 8985)
	Undos                   uint64 // loss recoveries undone as spurious, after D-SACKs
	KeepAlives              uint64 // keep-alive probes sent
	ResetsSent              uint64
	SYNCookies              uint64 // SYN-ACKs sent as SYN cookies
	Dropped                 uint64 // malformed segments and SYNs beyond the limits
	Conns                   int    // connections in any state but TIME-WAIT
	HalfOpen                int    // connections from peers in SYN-RECEIVED
	TimeWait                int    // four-tuples in TIME-WAIT
	BufferBytes             int64  // how far the connections' buffer limits grew beyond their start
}

// Stack is a TCP endpoint. It is safe for concurrent use.
type Stack struct {
	cfg   Config
	pool  *bufpool.Pool
	epoch time.Time // the stack clock counts from here
	mem   memory
	shift uint8 // window scale of every connection's receive window
	reno  bool  // NewReno instead of CUBIC
	seed  maphash.Seed

	mu        sync.Mutex
	conns     map[connID]*Conn
	listeners map[uint16]*Listener
	inbound   int // connections from peers, for the dials' reserve
	halfOpen  int // connections from peers in SYN-RECEIVED
	tw        timeWaits
	closed    bool

	ipID                        atomic.Uint32
	segsIn, segsOut, retransmit atomic.Uint64
	resets, dropped, timeouts   atomic.Uint64
	keepalives, probes, undos   atomic.Uint64
	cookies, recoveries         atomic.Uint64

	// iss, if set, chooses initial sequence numbers instead of chance;
	// tests use it to cover both halves of the sequence space and its
	// wrap.
	iss func() uint32
}

// New returns a Stack.
func New(cfg Config) *Stack {
	cfg.setDefaults()
	s := &Stack{
		cfg:       cfg,
		pool:      bufpool.New(256, cfg.MTU),
		epoch:     time.Now(),
		mem:       memory{limit: int64(cfg.MemoryLimit)},
		reno:      cfg.CongestionControl == "newreno",
		seed:      maphash.MakeSeed(),
		conns:     map[connID]*Conn{},
		listeners: map[uint16]*Listener{},
	}
	for cfg.ReceiveBuffer>>s.shift > 0xffff {
		s.shift++
	}
	s.tw.init(s)
	return s
}

// now returns the stack clock: monotonic nanoseconds since New.
func (s *Stack) now() int64 { return int64(time.Since(s.epoch)) }

// inboundLimit is how many connections peers may hold: MaxConns less the
// reserve for Dial.
func (s *Stack) inboundLimit() int {
	reserve := 0
	if s.cfg.MaxConns >= 8 {
		reserve = s.cfg.MaxConns / 8
	}
	return s.cfg.MaxConns - reserve
}

// Stats returns the stack's counters.
func (s *Stack) Stats() Stats {
	s.mu.Lock()
	n, half, tw := len(s.conns), s.halfOpen, len(s.tw.m)
	s.mu.Unlock()
	return Stats{
		SegmentsIn: s.segsIn.Load(), SegmentsOut: s.segsOut.Load(),
		Retransmits: s.retransmit.Load(), ResetsSent: s.resets.Load(),
		Dropped: s.dropped.Load(), Timeouts: s.timeouts.Load(), KeepAlives: s.keepalives.Load(),
		Recoveries: s.recoveries.Load(), LossProbes: s.probes.Load(), Undos: s.undos.Load(), SYNCookies: s.cookies.Load(),
		Conns: n, HalfOpen: half, TimeWait: tw, BufferBytes: s.mem.used.Load(),
	}
}

// Inbound handles the TCP segment seg (header and payload) that src sent
// to dst. The segment is only read during the call.
func (s *Stack) Inbound(src, dst netip.Addr, seg []byte) { s.deliver(nil, src, dst, seg) }

// deliver hands seg to its connection, its four-tuple's TIME-WAIT entry,
// or else to via, if not nil, or the listener of its port.
func (s *Stack) deliver(via *Listener, src, dst netip.Addr, seg []byte) {
	var sg segment
	if parseSegment(src, dst, seg, &sg) != nil {
		s.dropped.Add(1)
		return
	}
	s.segsIn.Add(1)
	id := connID{local: netip.AddrPortFrom(dst, sg.dstPort), remote: netip.AddrPortFrom(src, sg.srcPort)}
	s.mu.Lock()
	c := s.conns[id]
	l := via
	if c == nil {
		handled, ack, reply := s.tw.input(id, &sg)
		if handled {
			s.mu.Unlock()
			if ack {
				s.sendNow(&reply)
			}
			return
		}
		if l == nil {
			l = s.listeners[sg.dstPort]
		}
	}
	s.mu.Unlock()
	switch {
	case c != nil:
		c.input(&sg)
	case l != nil:
		s.listenInput(l, id, &sg)
	default:
		s.sendReset(id, &sg)
	}
}

// listenInput handles a segment for a listener with no connection of
// its four-tuple.
func (s *Stack) listenInput(l *Listener, id connID, sg *segment) {
	switch {
	case sg.has(flagRST):
		return
	case sg.has(flagACK) && !sg.has(flagSYN):
		if !s.cookieACK(l, id, sg) {
			s.sendReset(id, sg)
		}
		return
	case sg.has(flagACK) || !sg.has(flagSYN):
		return
	}
	s.mu.Lock()
	if c := s.conns[id]; c != nil {
		s.mu.Unlock()
		c.input(sg)
		return
	}
	switch {
	case s.closed || l.closed || l.full() || s.inbound >= s.inboundLimit() || len(s.conns) >= s.cfg.MaxConns:
		s.mu.Unlock()
		s.dropped.Add(1)
		return
	case s.halfOpen >= s.cfg.MaxHalfOpen:
		s.mu.Unlock()
		s.sendCookie(id, sg)
		return
	}
	c := s.newConn(id)
	c.listener = l
	c.halfOpen, c.inbound = true, true
	s.halfOpen++
	s.inbound++
	s.conns[id] = c
	s.mu.Unlock()

	c.mu.Lock()
	c.acceptSYN(sg)
	c.unlock()
}

// sendReset answers a segment that belongs to no connection (RFC 9293,
// section 3.10.7.1).
func (s *Stack) sendReset(id connID, sg *segment) {
	if sg.has(flagRST) {
		return
	}
	h := header{src: id.local, dst: id.remote, wscale: -1}
	if sg.has(flagACK) {
		h.seq, h.flags = sg.ack, flagRST
	} else {
		h.ack, h.flags = sg.seq+sg.len(), flagRST|flagACK
	}
	s.resets.Add(1)
	s.sendNow(&h)
}

// sendNow builds and sends a segment without data outside any
// connection.
func (s *Stack) sendNow(h *header) {
	bp := s.pool.Get()
	s.send(bp, h, nil, nil)
	s.output(bp)
}

// send builds a packet into bp, cutting it to its length.
func (s *Stack) send(bp *[]byte, h *header, p1, p2 []byte) {
	h.ipID = uint16(s.ipID.Add(1))
	n, err := buildSegment(*bp, h, p1, p2)
	if err != nil {
		n = 0
	}
	*bp = (*bp)[:n]
}

// output hands the packet in bp to Config.Output and returns bp to the
// pool.
func (s *Stack) output(bp *[]byte) {
	if len(*bp) > 0 {
		s.segsOut.Add(1)
		s.cfg.Output(*bp)
	}
	s.pool.Put(bp)
}

// mss returns the largest segment payload for packets from local.
func (s *Stack) mss(local netip.Addr) int {
	if local.Is4() {
		return s.cfg.MTU - 40
	}
	return s.cfg.MTU - 60
}

// Listen opens a listener on port of every local address. Port 0 picks a
// free port of the ephemeral range.
func (s *Stack) Listen(port uint16) (*Listener, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if port == 0 {
		if port = s.listenPort(); port == 0 {
			return nil, errNoPorts
		}
	}
	if s.listeners[port] != nil {
		return nil, syscall.EADDRINUSE
	}
	l := &Listener{s: s, port: port, acceptq: make(chan *Conn, s.cfg.Backlog), done: make(chan struct{})}
	s.listeners[port] = l
	return l, nil
}

// listenPort returns an ephemeral port that no listener or connection uses,
// or 0. s.mu is held.
func (s *Stack) listenPort() uint16 {
	used := make(map[uint16]bool, len(s.conns))
	for id := range s.conns {
		used[id.local.Port()] = true
	}
	var r [2]byte
	rand.Read(r[:])
	start := binary.BigEndian.Uint16(r[:])
	for i := range 16384 {
		port := uint16(49152 + (int(start)+i)%16384)
		if s.listeners[port] == nil && !used[port] {
			return port
		}
	}
	return 0
}

// Dial opens a connection from src (an address of the node) to dst, from
// a free ephemeral port, and waits until it is established, refused, timed
// out or ctx is done.
func (s *Stack) Dial(ctx context.Context, src netip.Addr, dst netip.AddrPort) (*Conn, error) {
	if src.Is4() != dst.Addr().Is4() {
		return nil, fmt.Errorf("tcp: source %v and destination %v of different families", src, dst)
	}
	return s.dial(ctx, netip.AddrPortFrom(src, 0), dst)
}

// dial is Dial from src, whose port 0 means a free ephemeral one.
func (s *Stack) dial(ctx context.Context, src, dst netip.AddrPort) (*Conn, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	if len(s.conns) >= s.cfg.MaxConns {
		s.mu.Unlock()
		return nil, errTooMany
	}
	id := connID{local: src, remote: dst}
	if src.Port() == 0 {
		var ok bool
		if id, ok = s.freePort(src.Addr(), dst); !ok {
			s.mu.Unlock()
			return nil, errNoPorts
		}
	} else if s.conns[id] != nil {
		s.mu.Unlock()
		return nil, fmt.Errorf("tcp: %v to %v already in use", src, dst)
	}
	s.tw.remove(id)
	c := s.newConn(id)
	s.conns[id] = c
	s.mu.Unlock()

	c.mu.Lock()
	c.state = stateSynSent
	c.offerWScale = true
	c.sendSYN()
	stop := context.AfterFunc(ctx, func() {
		c.mu.Lock()
		c.wake()
		c.mu.Unlock()
	})
	defer stop()
	for c.state == stateSynSent || c.state == stateSynReceived {
		if err := ctx.Err(); err != nil {
			c.abort(err)
			c.unlock()
			return nil, err
		}
		c.wait(&c.sndCond)
	}
	err := c.err
	c.unlock()
	if err != nil {
		return nil, err
	}
	return c, nil
}

// freePort picks an ephemeral port whose four-tuple to dst is neither in
// use nor in TIME-WAIT. Called with s.mu held.
func (s *Stack) freePort(src netip.Addr, dst netip.AddrPort) (connID, bool) {
	var r [2]byte
	rand.Read(r[:])
	start := binary.BigEndian.Uint16(r[:])
	for i := range 16384 {
		port := uint16(49152 + (int(start)+i)%16384)
		id := connID{local: netip.AddrPortFrom(src, port), remote: dst}
		if s.conns[id] == nil && s.listeners[port] == nil && !s.tw.has(id) {
			return id, true
		}
	}
	return connID{}, false
}

// remove forgets c. Called with c.mu held.
func (s *Stack) remove(c *Conn) {
	s.mu.Lock()
	if s.conns[c.id] == c {
		delete(s.conns, c.id)
	}
	if c.halfOpen {
		c.halfOpen = false
		s.halfOpen--
	}
	if c.inbound {
		c.inbound = false
		s.inbound--
	}
	s.mu.Unlock()
}

// Close closes every listener and aborts every connection with a reset.
func (s *Stack) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	ls := make([]*Listener, 0, len(s.listeners))
	for _, l := range s.listeners {
		ls = append(ls, l)
	}
	cs := make([]*Conn, 0, len(s.conns))
	for _, c := range s.conns {
		cs = append(cs, c)
	}
	s.tw.close()
	s.mu.Unlock()
	for _, l := range ls {
		l.Close()
	}
	for _, c := range cs {
		c.mu.Lock()
		c.abort(ErrClosed)
		c.unlock()
	}
	return nil
}
