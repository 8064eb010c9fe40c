package microlink

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"

	"github.com/microlink-go/microlink/internal/dns"
	"github.com/microlink-go/microlink/internal/packet"
	"github.com/microlink-go/microlink/internal/tcp"
)

// MagicDNS in TUN mode: the host's packets to the resolver's addresses
// (100.100.100.100, fd7a:115c:a1e0::53) reach the TUN device through the
// node's routes for the tailnet ranges, and hostResolver answers them
// instead of handing them to WireGuard. UDP queries go to the resolver
// one by one; TCP connections end in a small TCP stack of their own and
// are served by the resolver's TCP server; echo requests are answered.

// Bounds of the host's use of the resolver.
const (
	// hostDNSQueries bounds the UDP queries being answered at once (a
	// forwarded one may wait for its upstream); more are dropped, and
	// the host's resolver asks again.
	hostDNSQueries = 64
	// hostDNSConns bounds the TCP connections to the resolver.
	hostDNSConns = 16
)

// hostResolver serves the node's resolver to the host through the TUN
// device.
type hostResolver struct {
	r      *dns.Resolver
	write  func(pkt []byte) // to the host, through the device
	logger *slog.Logger
	tcp    *tcp.Stack
	ln     *tcp.Listener
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	busy   chan struct{} // one token per UDP query being answered
}

func newHostResolver(r *dns.Resolver, mtu int, write func([]byte), logger *slog.Logger) *hostResolver {
	h := &hostResolver{r: r, write: write, logger: logger, busy: make(chan struct{}, hostDNSQueries)}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	h.tcp = tcp.New(tcp.Config{
		Output: func(pkt []byte) error { write(pkt); return nil },
		Logger: logger, MTU: mtu, MaxConns: hostDNSConns,
		// Queries are small; an answer of up to 64 KiB waits in
		// the send buffer for the host's acknowledgements.
		SendBuffer: 16 << 10, ReceiveBuffer: 4 << 10,
	})
	ln, err := h.tcp.Listen(53)
	if err != nil { // cannot happen on a fresh stack
		panic(err)
	}
	h.ln = ln
	h.wg.Add(1)
	go h.accept()
	return h
}

// forResolver reports whether pkt is addressed to the resolver, reading
// only its destination address: it runs for every packet the host sends.
func forResolver(pkt []byte) bool {
	switch {
	case len(pkt) >= 20 && pkt[0]>>4 == 4:
		return [4]byte(pkt[16:20]) == dns.IPv4.As4()
	case len(pkt) >= 40 && pkt[0]>>4 == 6:
		return [16]byte(pkt[24:40]) == dns.IPv6.As16()
	}
	return false
}

// handle takes a packet from the host to the resolver's address. Packets
// other than DNS over UDP or TCP on port 53 and echo requests are
// dropped (TCP to other ports is reset).
func (h *hostResolver) handle(pkt []byte) {
	var p packet.Parsed
	if p.Decode(pkt) != nil || p.IsFragment() {
		return
	}
	switch {
	case p.Proto == packet.ProtoUDP && p.DstPort == 53:
		h.query(p.SrcAddrPort(), p.DstAddrPort(), p.Payload())
	case p.Proto == packet.ProtoTCP:
		h.tcp.Inbound(p.Src, p.Dst, p.Transport())
	case p.IsEchoRequest():
		reply := make([]byte, len(pkt))
		if n, err := packet.EchoReply(reply, pkt); err == nil {
			h.write(reply[:n])
		}
	}
}

// query answers one UDP query in a goroutine of its own, if fewer than
// hostDNSQueries are being answered.
func (h *hostResolver) query(client, server netip.AddrPort, payload []byte) {
	select {
	case h.busy <- struct{}{}:
	default:
		return
	}
	q := append([]byte(nil), payload...)
	h.wg.Add(1)
	go func() {
		defer func() { <-h.busy; h.wg.Done() }()
		resp := h.r.Respond(h.ctx, q, false)
		if resp == nil || h.ctx.Err() != nil {
			return
		}
		b := make([]byte, packet.IPHeaderLen(server.Addr())+packet.UDPHeaderLen+len(resp))
		n, err := packet.BuildUDP(b, server, client, resp)
		if err != nil {
			h.logger.Debug("microlink: answering the host's DNS query", "err", err)
			return
		}
		h.write(b[:n])
	}()
}

// accept serves each TCP connection to the resolver.
func (h *hostResolver) accept() {
	defer h.wg.Done()
	for {
		c, err := h.ln.Accept()
		if err != nil {
			return
		}
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			h.r.ServeTCP(h.ctx, c)
		}()
	}
}

// close ends the connections and queries in progress and waits for
// their goroutines.
func (h *hostResolver) close() {
	h.cancel()
	h.ln.Close()
	h.tcp.Close()
	h.wg.Wait()
}
