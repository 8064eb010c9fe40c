package tunnel

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/microlink-go/microlink/internal/bufpool"
	"github.com/microlink-go/microlink/internal/key"
	"github.com/microlink-go/microlink/internal/packet"
	"github.com/microlink-go/microlink/internal/tcp"
)

// Config configures a Stack.
type Config struct {
	// Output hands a complete IP packet to WireGuard. The packet is only
	// valid during the call.
	Output func(ipPacket []byte) error
	// OnDiscoKey, if set, is called when a peer advertises its disco key
	// in a TSMP message.
	OnDiscoKey func(peer key.NodePublic, disco key.DiscoPublic)
	// Batch, if set, returns what batches a burst of Output calls (see
	// tcp.Config.Batch), or nil.
	Batch func() tcp.Corker
	// TCP configures the TCP stack; its Output, Batch and Logger are set
	// by the Stack.
	TCP    tcp.Config
	Logger *slog.Logger
}

// Stack is the node's userspace IP endpoint. It is safe for concurrent use.
type Stack struct {
	cfg    Config
	logger *slog.Logger
	pool   *bufpool.Pool
	tcp    *tcp.Stack

	addrs   atomic.Pointer[[]netip.Addr]  // own addresses, IPv4 first
	filter  atomic.Pointer[packet.Filter] // never nil
	forward atomic.Pointer[Forwarder]     // nil: packets not for the stack are dropped

	mu     sync.Mutex
	udp    map[uint16]*UDPConn
	pings  map[pingKey]chan struct{}
	closed bool
	done   chan struct{} // closed by Close

	dropped   atomic.Uint64
	delivered atomic.Uint64
	replied   atomic.Uint64
	forwarded atomic.Uint64
	nextEphem uint32
}

// Forwarder receives the packets from peers that passed the filter but
// that the stack does not handle itself.
type Forwarder struct {
	// Deliver takes one IP packet, valid only during the call.
	Deliver func(pkt []byte)
	// All makes Deliver take every packet to the node's own addresses
	// too, except TSMP and the replies to the stack's own pings: the
	// node's addresses belong to the host's kernel (TUN mode). Without
	// it Deliver takes only packets to other addresses (routes the
	// node serves).
	All bool
}

// pingKey identifies an outstanding ping: TSMP data or an ICMP id and
// sequence number.
type pingKey struct {
	tsmp bool
	data [8]byte
}

// ErrClosed is returned by operations on a closed Stack or socket.
var ErrClosed = errors.New("tunnel: closed")

// noSource is the error for a destination of a family the node has no
// address of: the network is unreachable, as the kernel would say.
func noSource(dst netip.Addr) error {
	return fmt.Errorf("tunnel: no own address for %v: %w", dst, syscall.ENETUNREACH)
}

// New returns a Stack with no addresses and a filter that lets nothing
// in: the node accepts no packet before it knows its rules.
func New(cfg Config) *Stack {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Stack{
		cfg:    cfg,
		logger: cfg.Logger,
		pool:   bufpool.New(64, MaxPacket),
		udp:    map[uint16]*UDPConn{},
		pings:  map[pingKey]chan struct{}{},
		done:   make(chan struct{}),
	}
	empty := []netip.Addr{}
	s.addrs.Store(&empty)
	s.filter.Store(packet.DenyAll())
	tc := cfg.TCP
	tc.Output = s.output
	tc.Batch = cfg.Batch
	tc.Logger = cfg.Logger
	tc.MTU = MaxPacket
	s.tcp = tcp.New(tc)
	return s
}

// SetAddresses sets the node's own tailnet addresses.
func (s *Stack) SetAddresses(prefixes []netip.Prefix) {
	addrs := make([]netip.Addr, 0, len(prefixes))
	for _, p := range prefixes {
		if p.Addr().Is4() {
			addrs = append(addrs, p.Addr())
		}
	}
	for _, p := range prefixes {
		if p.Addr().Is6() {
			addrs = append(addrs, p.Addr())
		}
	}
	s.addrs.Store(&addrs)
}

// Addresses returns the node's own addresses, IPv4 first.
func (s *Stack) Addresses() []netip.Addr { return *s.addrs.Load() }

// SetFilter installs the inbound packet filter; nil lets nothing in.
func (s *Stack) SetFilter(f *packet.Filter) {
	if f == nil {
		f = packet.DenyAll()
	}
	s.filter.Store(f)
}

// Filter returns the installed filter.
func (s *Stack) Filter() *packet.Filter { return s.filter.Load() }

// source returns our address of dst's family.
func (s *Stack) source(dst netip.Addr) (netip.Addr, bool) {
	for _, a := range *s.addrs.Load() {
		if a.Is4() == dst.Is4() {
			return a, true
		}
	}
	return netip.Addr{}, false
}

func (s *Stack) isLocal(a netip.Addr) bool {
	for _, l := range *s.addrs.Load() {
		if l == a {
			return true
		}
	}
	return false
}

// SetForwarder installs f, or with nil removes the forwarder. The filter
// judges forwarded packets as it does the stack's own, so its local
// addresses must include the routes the forwarder serves.
func (s *Stack) SetForwarder(f *Forwarder) { s.forward.Store(f) }

// Forwarded returns the number of packets handed to the forwarder.
func (s *Stack) Forwarded() uint64 { return s.forwarded.Load() }

// Counters returns packets dropped, delivered to sockets, and answered.
func (s *Stack) Counters() (dropped, delivered, replied uint64) {
	return s.dropped.Load(), s.delivered.Load(), s.replied.Load()
}

// Inbound handles one IP packet that WireGuard decrypted from peer. The
// packet is only read during the call.
func (s *Stack) Inbound(peer key.NodePublic, pkt []byte) {
	var p packet.Parsed
	if err := p.Decode(pkt); err != nil {
		s.dropped.Add(1)
		return
	}
	local := s.isLocal(p.Dst)
	fwd := s.forward.Load()
	if !local && fwd == nil {
		s.dropped.Add(1)
		return
	}
	if p.Proto == packet.ProtoTSMP {
		if local {
			s.handleTSMP(peer, &p)
		} else {
			s.dropped.Add(1)
		}
		return
	}
	// Fragments are not reassembled: the tunnel MTU keeps peers from
	// sending them, and a first fragment taken for the whole packet
	// would be a truncated datagram.
	if p.IsFragment() || s.filter.Load().Inbound(&p) != packet.Accept {
		s.dropped.Add(1)
		return
	}
	if fwd != nil && (!local || fwd.All) {
		if local && p.IsEchoReply() && s.completePing(echoKey(&p)) {
			return
		}
		s.forwarded.Add(1)
		fwd.Deliver(p.Buffer())
		return
	}
	switch {
	case p.Proto == packet.ProtoUDP:
		s.deliverUDP(&p)
	case p.Proto == packet.ProtoTCP:
		s.delivered.Add(1)
		s.tcp.Inbound(p.Src, p.Dst, p.Transport())
	case p.IsEchoRequest():
		s.replyEcho(p.Buffer())
	case p.IsEchoReply():
		s.completePing(echoKey(&p))
	default:
		s.dropped.Add(1)
	}
}

func (s *Stack) handleTSMP(peer key.NodePublic, p *packet.Parsed) {
	typ, ok := p.TSMPType()
	if !ok {
		s.dropped.Add(1)
		return
	}
	switch typ {
	case packet.TSMPPing:
		s.replyTSMP(p)
	case packet.TSMPPong:
		if data, _, ok := p.TSMPPongData(); ok {
			s.completePing(pingKey{tsmp: true, data: data})
		}
	case packet.TSMPDiscoKey:
		if k, ok := p.TSMPDiscoKey(); ok && s.cfg.OnDiscoKey != nil {
			s.cfg.OnDiscoKey(peer, k)
		}
	default:
		// Rejections and unknown types are informational.
	}
}

// replyEcho answers an ICMP echo request.
func (s *Stack) replyEcho(req []byte) {
	bp := s.pool.Get()
	n, err := packet.EchoReply(*bp, req)
	s.send(bp, n, err)
}

// replyTSMP answers a TSMP ping with a pong.
func (s *Stack) replyTSMP(ping *packet.Parsed) {
	bp := s.pool.Get()
	n, err := packet.BuildTSMPPong(*bp, ping, 0)
	s.send(bp, n, err)
}

// send outputs the n-byte reply in bp unless building it failed, and
// returns bp to the pool.
func (s *Stack) send(bp *[]byte, n int, err error) {
	defer s.pool.Put(bp)
	if err != nil {
		s.dropped.Add(1)
		return
	}
	if s.cfg.Output((*bp)[:n]) == nil {
		s.replied.Add(1)
	}
}

func (s *Stack) deliverUDP(p *packet.Parsed) {
	s.mu.Lock()
	c := s.udp[p.DstPort]
	s.mu.Unlock()
	if c == nil || !c.enqueue(p.SrcAddrPort(), p.Payload(), s.pool) {
		s.dropped.Add(1)
		return
	}
	s.delivered.Add(1)
}

// Outbound sends an IP packet that did not come from the stack: one the
// host's kernel routed into the TUN device, or a forwarder's reply. Like
// the stack's own packets it is recorded by the filter, so that replies
// are let back in; packets no peer should get (malformed, multicast,
// link-local) are dropped.
func (s *Stack) Outbound(pkt []byte) error {
	var p packet.Parsed
	if p.Decode(pkt) != nil || s.filter.Load().Outbound(&p) != packet.Accept {
		s.dropped.Add(1)
		return errOutboundDropped
	}
	return s.cfg.Output(pkt)
}

var errOutboundDropped = errors.New("tunnel: outbound packet dropped by the filter")

// output sends an IP packet built by the stack, telling the filter first so
// that replies are let back in.
func (s *Stack) output(pkt []byte) error {
	var p packet.Parsed
	if p.Decode(pkt) == nil {
		s.filter.Load().Outbound(&p)
	}
	return s.cfg.Output(pkt)
}

// echoKey returns the key of the ping an ICMP echo reply answers.
func echoKey(p *packet.Parsed) pingKey {
	var k pingKey
	binary.BigEndian.PutUint16(k.data[0:], p.ICMPID)
	binary.BigEndian.PutUint16(k.data[2:], p.ICMPSeq)
	return k
}

// completePing ends the outstanding ping k; false if there is none.
func (s *Stack) completePing(k pingKey) bool {
	s.mu.Lock()
	ch := s.pings[k]
	delete(s.pings, k)
	s.mu.Unlock()
	if ch != nil {
		close(ch)
	}
	return ch != nil
}

func randomBytes(b []byte) {
	if _, err := rand.Read(b); err != nil {
		panic("tunnel: no randomness: " + err.Error())
	}
}

// Close closes every socket and fails outstanding pings.
func (s *Stack) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	conns := make([]*UDPConn, 0, len(s.udp))
	for _, c := range s.udp {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	s.tcp.Close()
	return nil
}
