package dns

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// Sizes and times.
const (
	minUDPSize = 512  // a UDP answer's limit without EDNS
	maxUDPSize = 1232 // the most we answer over UDP, and advertise in EDNS
	maxTCPSize = 65535
	ttl        = 600 // seconds, for tailnet answers

	forwardTimeout = 2 * time.Second // per upstream try
	queryTimeout   = 5 * time.Second // for a whole forwarded query
)

// Exchange sends a query to a DNS server and returns its answer: over UDP,
// or over TCP (length-prefixed) when tcp is set.
type Exchange func(ctx context.Context, server netip.AddrPort, query []byte, tcp bool) ([]byte, error)

// Options configure a Resolver.
type Options struct {
	// Exchange forwards queries; nil means over the host's network.
	Exchange Exchange
	// HostResolvers returns the host's resolvers, used when the Config
	// has no upstream; nil means those of /etc/resolv.conf.
	HostResolvers func() []netip.AddrPort
	Logger        *slog.Logger
}

// Resolver answers DNS queries for a tailnet. It is safe for concurrent
// use; SetConfig may be called at any time.
type Resolver struct {
	exchange Exchange
	host     func() []netip.AddrPort
	logger   *slog.Logger
	cfg      atomic.Pointer[Config]
	base     atomic.Pointer[[]netip.AddrPort] // SetHostResolvers; nil: host

	hostMu   sync.Mutex
	hostAt   time.Time
	hostList []netip.AddrPort
}

// New returns a Resolver with an empty Config: it forwards everything to
// the host's resolvers until SetConfig.
func New(opts Options) *Resolver {
	r := &Resolver{exchange: opts.Exchange, host: opts.HostResolvers, logger: opts.Logger}
	if r.exchange == nil {
		r.exchange = HostExchange
	}
	if r.logger == nil {
		r.logger = slog.New(slog.DiscardHandler)
	}
	if r.host == nil {
		r.host = r.resolvConf
	}
	r.cfg.Store(&Config{})
	return r
}

// SetConfig replaces the resolver's configuration.
func (r *Resolver) SetConfig(c Config) { r.cfg.Store(&c) }

// SetHostResolvers makes servers the host's resolvers, in place of those
// Options.HostResolvers finds: for when the host's resolver configuration
// names this resolver, and the servers it named before are what names
// outside the tailnet go to. Nil returns to Options.HostResolvers.
func (r *Resolver) SetHostResolvers(servers []netip.AddrPort) {
	if servers == nil {
		r.base.Store(nil)
		return
	}
	r.base.Store(&servers)
}

// hostResolvers returns the servers for names the Config routes nowhere.
func (r *Resolver) hostResolvers() []netip.AddrPort {
	if b := r.base.Load(); b != nil {
		return *b
	}
	return r.host()
}

// query is a parsed question.
type query struct {
	hdr      dnsmessage.Header
	q        dnsmessage.Question
	name     string // lower case, absolute
	edns     bool
	udpSize  int
	badVers  bool
	rawQuery []byte
}

var errNoHeader = errors.New("dns: unreadable header")

// parseQuery reads a query; an error with a readable header comes with
// the header, for a FORMERR answer.
func parseQuery(b []byte) (query, dnsmessage.RCode, error) {
	var p dnsmessage.Parser
	var qq query
	qq.rawQuery = b
	h, err := p.Start(b)
	if err != nil {
		return qq, 0, errNoHeader
	}
	qq.hdr = h
	if h.Response {
		return qq, 0, errNoHeader // not a query: drop it
	}
	if h.OpCode != 0 {
		return qq, dnsmessage.RCodeNotImplemented, errors.New("dns: opcode not supported")
	}
	qs, err := p.AllQuestions()
	if err != nil || len(qs) != 1 {
		return qq, dnsmessage.RCodeFormatError, errors.New("dns: want exactly one question")
	}
	qq.q = qs[0]
	qq.name = strings.ToLower(qq.q.Name.String())
	if err := p.SkipAllAnswers(); err != nil {
		return qq, dnsmessage.RCodeFormatError, err
	}
	if err := p.SkipAllAuthorities(); err != nil {
		return qq, dnsmessage.RCodeFormatError, err
	}
	qq.udpSize = minUDPSize
	for {
		rh, err := p.AdditionalHeader()
		if err == dnsmessage.ErrSectionDone {
			break
		}
		if err != nil {
			return qq, dnsmessage.RCodeFormatError, err
		}
		if rh.Type == dnsmessage.TypeOPT {
			if qq.edns {
				return qq, dnsmessage.RCodeFormatError, errors.New("dns: two OPT records")
			}
			qq.edns = true
			if sz := int(rh.Class); sz > minUDPSize {
				qq.udpSize = min(sz, maxUDPSize)
			}
			if (rh.TTL>>16)&0xff != 0 {
				qq.badVers = true
			}
		}
		if err := p.SkipAdditional(); err != nil {
			return qq, dnsmessage.RCodeFormatError, err
		}
	}
	return qq, 0, nil
}

// Respond answers one query message; tcp says how it came, which bounds
// the answer's size. It returns nil when the message gets no answer (it
// is no query, or not even its header could be read).
func (r *Resolver) Respond(ctx context.Context, msg []byte, tcp bool) []byte {
	qq, rcode, err := parseQuery(msg)
	if err == errNoHeader {
		return nil
	}
	maxSize := maxTCPSize
	if !tcp {
		maxSize = qq.udpSize
	}
	if err != nil {
		return r.reply(&qq, rcode, nil, maxSize)
	}
	if qq.badVers {
		return r.reply(&qq, rcodeBadVers, nil, maxSize)
	}
	cfg := r.cfg.Load()
	if ans, rcode, ok := r.answerLocal(cfg, &qq); ok {
		return r.reply(&qq, rcode, ans, maxSize)
	}
	servers, _ := cfg.route(qq.name)
	if len(servers) == 0 {
		servers = r.hostResolvers()
	}
	resp := r.forward(ctx, servers, &qq, tcp)
	if resp == nil {
		return r.reply(&qq, dnsmessage.RCodeServerFailure, nil, maxSize)
	}
	if len(resp) > maxSize {
		return truncate(resp, &qq, maxSize)
	}
	return resp
}

// rcodeBadVers is EDNS's BADVERS (16): 0 in the header, 1 in the OPT
// record's extended rcode.
const rcodeBadVers = dnsmessage.RCode(16)

// reply builds an answer to qq with rcode and the given answer records,
// truncated (TC set, no records) if it would exceed maxSize.
func (r *Resolver) reply(qq *query, rcode dnsmessage.RCode, ans []dnsmessage.Resource, maxSize int) []byte {
	b, err := build(qq, rcode, ans, false)
	if err == nil && len(b) > maxSize {
		b, err = build(qq, rcode, nil, true)
	}
	if err != nil {
		r.logger.Debug("dns: building an answer", "err", err)
		return nil
	}
	return b
}

func build(qq *query, rcode dnsmessage.RCode, ans []dnsmessage.Resource, truncated bool) ([]byte, error) {
	h := dnsmessage.Header{
		ID: qq.hdr.ID, Response: true, OpCode: qq.hdr.OpCode, RecursionDesired: qq.hdr.RecursionDesired,
		RecursionAvailable: true, Truncated: truncated, RCode: rcode & 0xf,
		Authoritative: rcode != dnsmessage.RCodeServerFailure && rcode != dnsmessage.RCodeFormatError && rcode != dnsmessage.RCodeNotImplemented && qq.name != "",
	}
	bld := dnsmessage.NewBuilder(make([]byte, 0, 128), h)
	bld.EnableCompression()
	if qq.name != "" {
		if err := bld.StartQuestions(); err != nil {
			return nil, err
		}
		if err := bld.Question(qq.q); err != nil {
			return nil, err
		}
	}
	if err := bld.StartAnswers(); err != nil {
		return nil, err
	}
	for _, a := range ans {
		var err error
		switch b := a.Body.(type) {
		case *dnsmessage.AResource:
			err = bld.AResource(a.Header, *b)
		case *dnsmessage.AAAAResource:
			err = bld.AAAAResource(a.Header, *b)
		case *dnsmessage.PTRResource:
			err = bld.PTRResource(a.Header, *b)
		}
		if err != nil {
			return nil, err
		}
	}
	if qq.edns {
		if err := bld.StartAdditionals(); err != nil {
			return nil, err
		}
		var rh dnsmessage.ResourceHeader
		if err := rh.SetEDNS0(maxUDPSize, rcode, false); err != nil {
			return nil, err
		}
		if err := bld.OPTResource(rh, dnsmessage.OPTResource{}); err != nil {
			return nil, err
		}
	}
	return bld.Finish()
}

// truncate turns an upstream answer too big for the client into an empty
// one with TC set, so the client asks again over TCP.
func truncate(resp []byte, qq *query, maxSize int) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(resp)
	if err != nil {
		return nil
	}
	b, err := build(qq, h.RCode, nil, true)
	if err != nil || len(b) > maxSize {
		return nil
	}
	return b
}
