package dns

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// forward sends qq to servers in turn until one answers, and returns the
// answer, or nil.
func (r *Resolver) forward(ctx context.Context, servers []netip.AddrPort, qq *query, tcp bool) []byte {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	for _, s := range servers {
		if IsResolver(s.Addr()) {
			continue // ourselves: a loop
		}
		tctx, tcancel := context.WithTimeout(ctx, forwardTimeout)
		resp, err := r.exchange(tctx, s, qq.rawQuery, tcp)
		tcancel()
		if err == nil && !tcp && isTruncated(resp) {
			// Too big for UDP upstream: pass the TC bit on, so the
			// client asks again over TCP.
			return resp
		}
		if err == nil && validAnswer(resp, qq) {
			return resp
		}
		r.logger.Debug("dns: forwarding failed", "server", s, "name", qq.name, "err", err)
		if ctx.Err() != nil {
			return nil
		}
	}
	return nil
}

func isTruncated(b []byte) bool {
	var p dnsmessage.Parser
	h, err := p.Start(b)
	return err == nil && h.Truncated
}

// validAnswer reports whether b answers qq: a response with its ID and
// question.
func validAnswer(b []byte, qq *query) bool {
	var p dnsmessage.Parser
	h, err := p.Start(b)
	if err != nil || !h.Response || h.ID != qq.hdr.ID {
		return false
	}
	q, err := p.Question()
	if err == dnsmessage.ErrSectionDone {
		return h.RCode != dnsmessage.RCodeSuccess // an error answer may omit it
	}
	return err == nil && q.Type == qq.q.Type && strings.EqualFold(q.Name.String(), qq.q.Name.String())
}

// HostExchange sends a query over the host's network.
func HostExchange(ctx context.Context, server netip.AddrPort, query []byte, tcp bool) ([]byte, error) {
	var d net.Dialer
	network := "udp"
	if tcp {
		network = "tcp"
	}
	c, err := d.DialContext(ctx, network, server.String())
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return ExchangeConn(ctx, c, query, tcp)
}

// ExchangeConn sends query on c, a connected UDP socket or a TCP
// connection, and reads the answer with the same ID (UDP datagrams with
// other IDs are skipped).
func ExchangeConn(ctx context.Context, c net.Conn, query []byte, tcp bool) ([]byte, error) {
	if len(query) < 12 || len(query) > maxTCPSize {
		return nil, errors.New("dns: bad query size")
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if tcp {
		b := make([]byte, 2+len(query))
		binary.BigEndian.PutUint16(b, uint16(len(query)))
		copy(b[2:], query)
		if _, err := c.Write(b); err != nil {
			return nil, err
		}
		return ReadTCPMessage(bufio.NewReader(c))
	}
	if _, err := c.Write(query); err != nil {
		return nil, err
	}
	buf := make([]byte, maxTCPSize)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return nil, err
		}
		if n >= 12 && buf[0] == query[0] && buf[1] == query[1] {
			return append([]byte(nil), buf[:n]...), nil
		}
	}
}

// ReadTCPMessage reads one length-prefixed DNS message.
func ReadTCPMessage(br *bufio.Reader) ([]byte, error) {
	var lb [2]byte
	if _, err := io.ReadFull(br, lb[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(lb[:]))
	if n < 12 {
		return nil, errors.New("dns: message too short")
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(br, b); err != nil {
		return nil, err
	}
	return b, nil
}

// ServeTCP answers length-prefixed queries on c, one after another, until
// the client closes it, sends garbage, or is idle for 10 s (RFC 7766).
// It closes c.
func (r *Resolver) ServeTCP(ctx context.Context, c net.Conn) {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	br := bufio.NewReader(c)
	for {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		q, err := ReadTCPMessage(br)
		if err != nil {
			return
		}
		resp := r.Respond(ctx, q, true)
		if resp == nil {
			return
		}
		b := make([]byte, 2+len(resp))
		binary.BigEndian.PutUint16(b, uint16(len(resp)))
		copy(b[2:], resp)
		c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(b); err != nil {
			return
		}
	}
}

// resolvConf returns the nameservers of /etc/resolv.conf (but never the
// resolver itself), read at most every 5 s.
func (r *Resolver) resolvConf() []netip.AddrPort {
	r.hostMu.Lock()
	defer r.hostMu.Unlock()
	if time.Since(r.hostAt) < 5*time.Second {
		return r.hostList
	}
	r.hostAt = time.Now()
	b, err := os.ReadFile(resolvConfPath)
	if err != nil {
		r.hostList = nil
		return nil
	}
	r.hostList = ParseResolvConf(b)
	return r.hostList
}

// resolvConfPath is the host's resolver configuration.
const resolvConfPath = "/etc/resolv.conf"

// ParseResolvConf returns the nameservers of a resolv.conf, leaving out
// the MagicDNS resolver's own addresses.
func ParseResolvConf(b []byte) []netip.AddrPort {
	var out []netip.AddrPort
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		ip, err := netip.ParseAddr(f[1])
		if err != nil || IsResolver(ip) {
			continue
		}
		out = append(out, netip.AddrPortFrom(ip.Unmap(), 53))
	}
	return out
}
