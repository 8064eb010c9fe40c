package router

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/microlink-go/microlink/internal/bufpool"
	"github.com/microlink-go/microlink/internal/packet"
	"github.com/microlink-go/microlink/internal/tcp"
)

// Relay limits and timeouts.
const (
	// maxUDPFlows bounds the UDP flows (and sockets) the relay keeps;
	// datagrams of new flows beyond it are dropped.
	maxUDPFlows = 256
	// udpIdle closes a UDP flow that carried nothing for this long.
	udpIdle = 60 * time.Second
	// maxPingFlows and pingIdle are the same for ICMP echo.
	maxPingFlows = 64
	pingIdle     = 10 * time.Second
	// dialTimeout bounds the relay's connection to a destination.
	dialTimeout = 10 * time.Second
)

// Stack is what the relay needs of the node's userspace IP stack.
type Stack interface {
	// Outbound sends an IP packet to the tailnet.
	Outbound(pkt []byte) error
	// TCP is the node's TCP, in which the relay terminates connections.
	TCP() *tcp.Stack
}

// RelayConfig configures a Relay.
type RelayConfig struct {
	Stack  Stack
	Logger *slog.Logger
	// Dial opens the host's connection to a destination; nil means a
	// net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Relay is a subnet router in userspace mode: it takes the packets peers
// send to the networks the node routes for and carries their payload
// through the host's own sockets. TCP connections end in the node's TCP
// and continue on a host connection to the destination; UDP datagrams
// leave from a host socket per flow and the answers come back from it;
// ICMP echo requests go out through an unprivileged ICMP socket per
// flow (Linux; net.ipv4.ping_group_range must include the process's
// group). The host sees every connection come from itself, as with SNAT.
type Relay struct {
	cfg    RelayConfig
	logger *slog.Logger
	ln     *tcp.Listener
	pool   *bufpool.Pool
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	udp    map[flowKey]*udpFlow
	pings  map[flowKey]*pingFlow
	closed bool
	warned bool // about ICMP sockets not allowed
}

// flowKey is a flow: the peer's address and port (or echo identifier)
// and the destination's.
type flowKey struct{ src, dst netip.AddrPort }

// NewRelay starts a relay on the node's stack.
func NewRelay(cfg RelayConfig) *Relay {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Dial == nil {
		d := &net.Dialer{Timeout: dialTimeout}
		cfg.Dial = d.DialContext
	}
	r := &Relay{
		cfg: cfg, logger: cfg.Logger,
		ln:    cfg.Stack.TCP().ListenAny(),
		pool:  bufpool.New(16, 1<<16),
		udp:   map[flowKey]*udpFlow{},
		pings: map[flowKey]*pingFlow{},
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.wg.Add(1)
	go r.acceptTCP()
	return r
}

// Deliver takes a packet from a peer to a routed network, one the filter
// already let in.
func (r *Relay) Deliver(pkt []byte) {
	var p packet.Parsed
	if p.Decode(pkt) != nil || p.Fragment {
		return
	}
	switch {
	case p.Proto == packet.ProtoTCP:
		r.cfg.Stack.TCP().InboundVia(r.ln, p.Src, p.Dst, p.Transport())
	case p.Proto == packet.ProtoUDP:
		r.sendUDP(&p)
	case p.IsEchoRequest():
		r.ping(&p)
	}
}

// Close stops the relay: its TCP connections, UDP flows and pings end.
func (r *Relay) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	var closers []io.Closer
	for _, f := range r.udp {
		closers = append(closers, f.c)
	}
	for _, f := range r.pings {
		closers = append(closers, f.c)
	}
	r.mu.Unlock()
	r.cancel()
	r.ln.Close()
	for _, c := range closers {
		c.Close()
	}
	r.wg.Wait()
	return nil
}

// acceptTCP relays each connection the node's TCP accepts for a routed
// network.
func (r *Relay) acceptTCP() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.relayTCP(c)
		}()
	}
}

// relayTCP connects to the destination the peer connected to and copies
// both ways, passing on half-closes, until both directions end.
func (r *Relay) relayTCP(c net.Conn) {
	defer c.Close()
	dst := c.LocalAddr().String()
	ctx, cancel := context.WithTimeout(r.ctx, dialTimeout)
	h, err := r.cfg.Dial(ctx, "tcp", dst)
	cancel()
	if err != nil {
		r.logger.Debug("router: relaying TCP", "src", c.RemoteAddr(), "dst", dst, "err", err)
		return
	}
	defer h.Close()
	stop := context.AfterFunc(r.ctx, func() { c.Close(); h.Close() })
	defer stop()
	done := make(chan struct{}, 2)
	pipe := func(to, from net.Conn) {
		io.Copy(to, from)
		if cw, ok := to.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		} else {
			to.Close()
		}
		done <- struct{}{}
	}
	go pipe(h, c)
	go pipe(c, h)
	<-done
	<-done
}

// udpFlow is one peer's UDP flow to a destination, through a host socket
// connected to it.
type udpFlow struct {
	c    *net.UDPConn
	last time.Time // guarded by Relay.mu
}

// sendUDP sends the datagram through its flow's host socket, opening one
// for a new flow.
func (r *Relay) sendUDP(p *packet.Parsed) {
	k := flowKey{p.SrcAddrPort(), p.DstAddrPort()}
	r.mu.Lock()
	f := r.udp[k]
	if f == nil && !r.closed && len(r.udp) < maxUDPFlows {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(k.dst))
		if err != nil {
			r.mu.Unlock()
			r.logger.Debug("router: relaying UDP", "dst", k.dst, "err", err)
			return
		}
		f = &udpFlow{c: c}
		r.udp[k] = f
		r.wg.Add(1)
		go r.readUDP(k, f)
	}
	if f != nil {
		f.last = time.Now()
	}
	r.mu.Unlock()
	if f != nil {
		f.c.Write(p.Payload())
	}
}

// readUDP sends the destination's answers back to the peer, from the
// destination's address, until the flow is idle for udpIdle.
func (r *Relay) readUDP(k flowKey, f *udpFlow) {
	defer r.wg.Done()
	defer r.closeFlow(func() { delete(r.udp, k) }, f.c)
	bp := r.pool.Get()
	defer r.pool.Put(bp)
	buf := *bp
	hl := packet.IPHeaderLen(k.dst.Addr()) + packet.UDPHeaderLen
	for {
		f.c.SetReadDeadline(time.Now().Add(udpIdle))
		n, err := f.c.Read(buf[hl:])
		if err != nil {
			if !errors.Is(err, net.ErrClosed) && r.idle(&f.last, udpIdle) {
				return
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if m, err := packet.BuildUDP(buf, k.dst, k.src, buf[hl:hl+n]); err == nil {
			r.cfg.Stack.Outbound(buf[:m])
		}
	}
}

// idle reports whether a flow last used at *last has been idle for d.
func (r *Relay) idle(last *time.Time, d time.Duration) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed || time.Since(*last) >= d
}

// closeFlow removes a flow from its table and closes its socket.
func (r *Relay) closeFlow(remove func(), c io.Closer) {
	r.mu.Lock()
	remove()
	r.mu.Unlock()
	c.Close()
}
