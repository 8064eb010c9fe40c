// Package magicsock is the node's one UDP socket and the paths behind it.
//
// A Conn carries WireGuard, disco and STUN on the same UDP port and tells
// them apart by their first bytes. Each peer is reachable through its home
// DERP relay and, once disco pings prove one, over a direct UDP path; Send
// picks the path. The Conn also measures DERP regions with STUN from that
// socket, picks the home region and learns the node's public endpoints.
package magicsock

import (
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/microlink-go/microlink/internal/derp"
	"github.com/microlink-go/microlink/internal/disco"
	"github.com/microlink-go/microlink/internal/key"
	"github.com/microlink-go/microlink/internal/sockmark"
	"github.com/microlink-go/microlink/internal/tailcfg"
)

// DefaultPort is the UDP port Tailscale nodes listen on by default.
const DefaultPort = 41641

// DERPMagicIP stands for "over DERP" wherever a UDP address is expected:
// a path to region R is written 127.3.3.40:R. It never goes on the wire.
var DERPMagicIP = netip.AddrFrom4([4]byte{127, 3, 3, 40})

// DERPAddr returns the placeholder address of DERP region.
func DERPAddr(region int) netip.AddrPort { return netip.AddrPortFrom(DERPMagicIP, uint16(region)) }

// ErrClosed is returned after Close.
var ErrClosed = errors.New("magicsock: closed")

// DERP relays packets to peers by node key. *derp.Regions implements it.
type DERP interface {
	// Send relays pkt to dst through region, or through the region dst was
	// last heard on if region is 0.
	Send(region int, dst key.NodePublic, pkt []byte) error
	// SetHome makes region the home region.
	SetHome(region int)
	Close() error
}

// Corker is something that takes a burst of work between Cork and
// Uncork and finishes it at Uncork: a Conn's sends, a TUN device's
// writes.
type Corker interface {
	Cork()
	Uncork()
}

// A ReceiveBatch takes the WireGuard messages of one read loop of a UDP
// socket, as ReceiveWireGuard would (msg is valid only during Add), and
// is flushed after the messages of each read.
type ReceiveBatch interface {
	Add(msg []byte, src netip.AddrPort)
	Flush()
}

// EndpointType says how an endpoint was found.
// ConnectedDERP is an optional interface of a DERP: whether the connection
// to a region is up. A DERP without it is taken to be connected at once,
// and the home region is reported as soon as it is chosen.
type ConnectedDERP interface {
	Connected(region int) bool
}

type EndpointType = tailcfg.EndpointType

// Endpoint is an address peers may reach this node at.
type Endpoint struct {
	AddrPort netip.AddrPort
	Type     EndpointType
}

// Options configure a Conn.
type Options struct {
	// DiscoKey is the node's disco private key, fresh at every start.
	DiscoKey key.Private
	// NodeKey is the node's private key. It goes into disco pings and, if
	// DERP is nil, authenticates the DERP connections the Conn opens.
	NodeKey key.Private

	// Port is the UDP port to listen on; 0 picks any free port. When the
	// port is taken, another free port is used.
	Port uint16
	// BindIPv4 and BindIPv6 are the local addresses to bind; zero means
	// all addresses. DisableIPv6 skips the IPv6 socket.
	BindIPv4, BindIPv6 netip.Addr
	DisableIPv6        bool

	// ReceiveWireGuard is called with each inbound WireGuard message and
	// its source: the UDP address, or DERPAddr(region) over DERP. msg is
	// valid only during the call.
	ReceiveWireGuard func(msg []byte, src netip.AddrPort)
	// ReceiveWireGuardDERP, if set, receives the WireGuard messages that
	// arrive through DERP instead of ReceiveWireGuard, with the region
	// and the sender's node key, which together identify the sender
	// where DERPAddr(region) does not. msg is valid only during the call.
	ReceiveWireGuardDERP func(msg []byte, region int, from key.NodePublic)
	// NewReceiveBatch, if set, makes a ReceiveBatch for each UDP read
	// loop, which then takes the WireGuard messages of each read in
	// place of ReceiveWireGuard and is flushed at the end of the read
	// (before Burst is uncorked). DERP's messages still go to the hooks
	// above.
	NewReceiveBatch func() ReceiveBatch
	// OnPeerHeard, if set, is called with a peer's node key when the
	// first disco message from it arrives (after the peer is added, or
	// after its disco key changed): from then on the peer knows this
	// Conn's disco key, so it has learned from control of this node's
	// start. It is called on a receiving goroutine, with no lock held.
	OnPeerHeard func(peer key.NodePublic)
	// Burst, if set, is corked while the datagrams of one read from a
	// UDP socket (up to 8 buffers, each up to 64 KiB of datagrams the
	// kernel joined) are handed to the Receive hooks, and uncorked after
	// them: in TUN mode the device, which then writes what they carried
	// together.
	Burst Corker
	// OnEndpoints is called when the node's endpoints change.
	OnEndpoints func([]Endpoint)
	// OnHomeDERP is called when the home DERP region changes, once the
	// connection to the new home is up (when DERP can tell; see
	// ConnectedDERP), so that peers told of it by control find the node
	// there.
	OnHomeDERP func(region int)

	// DERP relays packets. If nil, the Conn runs a *derp.Regions of its
	// own on the DERP map given to SetDERPMap.
	DERP DERP
	// InterfaceAddrs lists local addresses to offer as endpoints. If nil
	// the host's interface addresses are used.
	InterfaceAddrs func() ([]netip.Addr, error)

	Logger *slog.Logger
}

// Conn is the node's magic socket. Its methods are safe for concurrent use.
type Conn struct {
	opts    Options
	log     *slog.Logger
	tm      timing
	sealer  *disco.Sealer
	nodePub key.NodePublic
	derp    DERP

	pc4, pc6 atomic.Pointer[net.UDPConn]
	closing  chan struct{}
	wg       sync.WaitGroup
	readers  sync.WaitGroup // read loops of the current sockets
	rebindMu sync.Mutex

	// loopbackOnly is set when the sockets are bound to loopback
	// addresses only: then peers can only be reached on loopback, and
	// loopback candidates from them are kept.
	loopbackOnly bool

	// dropUDP, set by tests, discards UDP packets to and from the
	// given address family's peers.
	dropUDP atomic.Bool

	counts counters
	out    sendBatch // what Send holds while corked (batch.go)

	mu        sync.Mutex
	closed    bool
	peers     map[key.NodePublic]*peer
	peerSnap  atomic.Pointer[map[key.NodePublic]*peer] // copy of peers for Send
	watched   atomic.Pointer[arrivals]                 // direct paths and their last arrivals (liveness.go)
	byDisco   map[key.DiscoPublic]*peer
	pings     map[[disco.TxIDLen]byte]*sentPing
	derpMap   *tailcfg.DERPMap
	nc        netcheckState
	endpoints []Endpoint
	epTime    time.Time // when endpoints were last determined
	home      int
	// homeUnreported is a home region not yet reported to OnHomeDERP
	// because its connection is not up; -1 when there is none.
	homeUnreported int
	lastActive     time.Time

	outbox []outPkt // disco packets to send once mu is released

	kick chan struct{} // wakes the maintenance loop
}

// New opens the sockets and starts the Conn.
func New(opts Options) (*Conn, error) { return newConn(opts, defaultTiming) }

func newConn(opts Options, tm timing) (*Conn, error) {
	if opts.DiscoKey.IsZero() {
		return nil, errors.New("magicsock: no disco key")
	}
	if opts.NodeKey.IsZero() && opts.DERP == nil {
		return nil, errors.New("magicsock: no node key for DERP")
	}
	c := &Conn{
		opts:    opts,
		log:     opts.Logger,
		tm:      tm,
		sealer:  disco.NewSealer(opts.DiscoKey, 0),
		nodePub: opts.NodeKey.NodePublic(),
		closing: make(chan struct{}),
		peers:   make(map[key.NodePublic]*peer),
		byDisco: make(map[key.DiscoPublic]*peer),
		pings:   make(map[[disco.TxIDLen]byte]*sentPing),
		kick:    make(chan struct{}, 1),
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if opts.NodeKey.IsZero() {
		c.nodePub = key.NodePublic{} // pings go out without a node key
	}
	c.loopbackOnly = opts.BindIPv4.IsLoopback() && (opts.DisableIPv6 || opts.BindIPv6.IsLoopback())
	c.nc.init()
	if err := c.listen(opts.Port); err != nil {
		return nil, err
	}
	c.derp = opts.DERP
	if c.derp == nil {
		c.derp = derp.NewRegions(derp.RegionsOptions{
			PrivateKey:  opts.NodeKey,
			Logger:      c.log,
			Lookup:      c.derpNodes,
			Receive:     c.ReceiveDERP,
			IsPeer:      c.isPeer,
			OnConnected: c.derpConnected,
		})
	}
	c.startReaders()
	c.wg.Add(1)
	go c.maintain()
	return c, nil
}

// DiscoPublic returns the node's disco public key.
func (c *Conn) DiscoPublic() key.DiscoPublic { return c.sealer.Public() }

// LocalPort returns the port of the UDP socket(s).
func (c *Conn) LocalPort() uint16 {
	if pc := c.pc4.Load(); pc != nil {
		return uint16(pc.LocalAddr().(*net.UDPAddr).Port)
	}
	if pc := c.pc6.Load(); pc != nil {
		return uint16(pc.LocalAddr().(*net.UDPAddr).Port)
	}
	return 0
}

// listen opens the sockets on port, or on any port if it is taken. The
// IPv6 socket tries to share the IPv4 socket's port.
func (c *Conn) listen(port uint16) error {
	pc4, err := listenUDP("udp4", c.opts.BindIPv4, port)
	if err != nil && port != 0 {
		pc4, err = listenUDP("udp4", c.opts.BindIPv4, 0)
	}
	if err != nil {
		c.log.Info("magicsock: no IPv4 socket", "err", err)
		pc4 = nil
	}
	var pc6 *net.UDPConn
	if !c.opts.DisableIPv6 {
		p6 := port
		if pc4 != nil {
			p6 = uint16(pc4.LocalAddr().(*net.UDPAddr).Port)
		}
		pc6, err = listenUDP("udp6", c.opts.BindIPv6, p6)
		if err != nil && p6 != 0 {
			pc6, err = listenUDP("udp6", c.opts.BindIPv6, 0)
		}
		if err != nil {
			c.log.Info("magicsock: no IPv6 socket", "err", err)
			pc6 = nil
		}
	}
	if pc4 == nil && pc6 == nil {
		return errors.New("magicsock: cannot open a UDP socket")
	}
	c.pc4.Store(pc4)
	c.pc6.Store(pc6)
	return nil
}

// socketBuffer is the size of the UDP sockets' receive and send buffers:
// a fast peer's bursts (a window of a TCP transfer, sent in GSO batches)
// overflow the default of about 200 KiB before the reader gets to them.
// tailscaled uses the same 7 MiB. The kernel takes the memory only for
// datagrams waiting.
const socketBuffer = 7 << 20

func listenUDP(network string, ip netip.Addr, port uint16) (*net.UDPConn, error) {
	addr := &net.UDPAddr{Port: int(port)}
	if ip.IsValid() {
		addr.IP = ip.AsSlice()
	}
	pc, err := sockmark.ListenUDP(network, addr)
	if err == nil {
		sizeBuffers(pc)
	}
	return pc, err
}

func (c *Conn) startReaders() {
	for _, pc := range []*net.UDPConn{c.pc4.Load(), c.pc6.Load()} {
		if pc != nil {
			c.readers.Add(1)
			go c.readLoop(pc)
		}
	}
}

// Close closes the sockets and DERP connections and stops every goroutine.
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	close(c.closing)
	c.rebindMu.Lock()
	c.closeSockets()
	c.rebindMu.Unlock()
	err := c.derp.Close()
	c.wg.Wait()
	return err
}

func (c *Conn) closeSockets() {
	if pc := c.pc4.Load(); pc != nil {
		pc.Close()
	}
	if pc := c.pc6.Load(); pc != nil {
		pc.Close()
	}
	c.readers.Wait()
}

// Rebind reopens the sockets on the same port if possible, redials the
// DERP connections (when the DERP has a Reconnect method, as
// *derp.Regions does), then STUNs again and reports the new endpoints.
func (c *Conn) Rebind() error {
	c.rebindMu.Lock()
	defer c.rebindMu.Unlock()
	select {
	case <-c.closing:
		return ErrClosed
	default:
	}
	port := c.LocalPort()
	c.closeSockets()
	if err := c.listen(port); err != nil {
		return err
	}
	c.startReaders()
	// TCP connections made from an address the host no longer has would
	// hang until their read timeout.
	if r, ok := c.derp.(interface{ Reconnect() }); ok {
		r.Reconnect()
	}
	c.mu.Lock()
	c.nc.forceFull = true
	c.nc.nextRun = time.Time{}
	c.mu.Unlock()
	c.wake()
	return nil
}

// wake asks the maintenance loop to run now.
func (c *Conn) wake() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// readLoop reads pc until it is closed: many datagrams per system call
// where the system allows (readBatch), else one at a time.
func (c *Conn) readLoop(pc *net.UDPConn) {
	defer c.readers.Done()
	if c.readBatch(pc) {
		return
	}
	buf := make([]byte, 64<<10)
	for {
		n, src, err := pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			if c.readFailed(err) {
				return
			}
			continue
		}
		src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
		c.receiveUDP(buf[:n], src, nil, 0) // the clock only for a watched source
	}
}

// readFailed reports whether the read loop must end after err, and
// otherwise pauses a little before the next read.
func (c *Conn) readFailed(err error) bool {
	if errors.Is(err, net.ErrClosed) {
		return true
	}
	select {
	case <-c.closing:
		return true
	case <-time.After(10 * time.Millisecond):
	}
	return false
}

// Packet classes on the UDP socket.
const (
	classWireGuard = iota
	classSTUN
	classDisco
	classGeneve
)

// classify tells the packets on the shared socket apart, in the order
// Tailscale does: STUN binding, Geneve, disco, and everything else is
// WireGuard.
func classify(b []byte) int {
	if len(b) >= 20 && b[0]&0xc0 == 0 && b[1] == 0x01 &&
		b[4] == 0x21 && b[5] == 0x12 && b[6] == 0xa4 && b[7] == 0x42 {
		return classSTUN
	}
	if len(b) >= 8 && b[0]&0xc0 == 0 && b[1]&0x3f == 0 && b[7] == 0 &&
		b[2] == 0x7a && (b[3] == 0x11 || b[3] == 0x12) {
		return classGeneve
	}
	if len(b) >= disco.MagicLen+disco.KeyLen && string(b[:disco.MagicLen]) == disco.Magic {
		return classDisco
	}
	return classWireGuard
}

// receiveUDP handles datagram b from src, read at time now (clock; 0 to
// read the clock only if needed). A WireGuard message goes to rb if not nil.
func (c *Conn) receiveUDP(b []byte, src netip.AddrPort, rb ReceiveBatch, now int64) {
	if c.dropUDP.Load() {
		return
	}
	switch classify(b) {
	case classSTUN:
		c.receiveSTUN(b, src)
	case classDisco:
		c.receiveDisco(b, src, 0, key.NodePublic{})
	case classGeneve:
		// Peer-relay encapsulation; this node is not a relay client.
	default:
		c.counts.directIn.add(len(b))
		c.noteArrival(src, now)
		switch {
		case rb != nil:
			rb.Add(b, src)
		case c.opts.ReceiveWireGuard != nil:
			c.opts.ReceiveWireGuard(b, src)
		}
	}
}

// isPeer reports whether k is the node key of a netmap peer.
func (c *Conn) isPeer(k key.NodePublic) bool {
	snap := c.peerSnap.Load()
	return snap != nil && (*snap)[k] != nil
}

// ReceiveDERP handles a packet relayed from src through region. It is the
// Receive hook of the DERP client; pkt is only read during the call.
func (c *Conn) ReceiveDERP(region int, src key.NodePublic, pkt []byte) {
	c.nc.noteDERPFrame(region)
	if disco.LooksLikeDisco(pkt) {
		c.receiveDisco(pkt, DERPAddr(region), region, src)
		return
	}
	c.counts.derpIn.add(len(pkt))
	switch {
	case c.opts.ReceiveWireGuardDERP != nil:
		c.opts.ReceiveWireGuardDERP(pkt, region, src)
	case c.opts.ReceiveWireGuard != nil:
		c.opts.ReceiveWireGuard(pkt, DERPAddr(region))
	}
}

// writeUDP sends b to dst from the socket of dst's family. The DERP
// placeholder is not a UDP address: whatever path state names it, nothing
// is sent there.
func (c *Conn) writeUDP(b []byte, dst netip.AddrPort) error {
	if dst.Addr() == DERPMagicIP {
		return ErrNotUDP
	}
	if c.dropUDP.Load() {
		return nil
	}
	pc := c.pc4.Load()
	if !dst.Addr().Is4() {
		pc = c.pc6.Load()
	}
	if pc == nil {
		return errNoSocket
	}
	_, err := pc.WriteToUDPAddrPort(b, dst)
	return err
}

var errNoSocket = errors.New("magicsock: no socket for address family")

// ErrNotUDP is returned by WriteUDP for an address that stands for a DERP
// region rather than a UDP endpoint.
var ErrNotUDP = errors.New("magicsock: not a UDP address")

// WriteUDP sends b from the node's socket straight to dst, outside any
// peer's path: for answers to whoever sent a datagram, such as WireGuard
// cookie replies to unverified handshakes.
func (c *Conn) WriteUDP(b []byte, dst netip.AddrPort) error {
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	if !dst.IsValid() {
		return ErrNotUDP
	}
	return c.counts.directOut.countSent(len(b), c.writeUDP(b, dst))
}

// WriteDERP sends b to dst through DERP region, or through the region dst
// was last heard on if region is 0, bypassing path selection: for
// answers that must go back the way a message came, such as cookie
// replies.
func (c *Conn) WriteDERP(b []byte, region int, dst key.NodePublic) error {
	select {
	case <-c.closing:
		return ErrClosed
	default:
	}
	return c.counts.derpOut.countSent(len(b), c.derp.Send(region, dst, b))
}

// randDuration returns a random duration in [lo, hi).
func randDuration(lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + rand.N(hi-lo)
}
