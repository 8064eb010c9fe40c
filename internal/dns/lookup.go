package dns

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"golang.org/x/net/dns/dnsmessage"
)

// LookupHost returns the addresses of host, for the node's own dials and
// its proxies: an IP literal, a tailnet name or extra record, or else
// whatever the forwarded A and AAAA queries answer. IPv4 comes first.
func (r *Resolver) LookupHost(ctx context.Context, host string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{ip.Unmap()}, nil
	}
	name := fqdn(host)
	if len(name) > 254 || name == "." {
		return nil, fmt.Errorf("dns: bad host name %q", host)
	}
	cfg := r.cfg.Load()
	if addrs, ok := r.lookupLocal(cfg, name); ok && len(addrs) > 0 {
		return sortV4First(addrs), nil
	}
	if _, local := cfg.route(name); local {
		return nil, fmt.Errorf("dns: no such host %q in the tailnet", host)
	}
	var out []netip.Addr
	var lastErr error
	for _, t := range []dnsmessage.Type{dnsmessage.TypeA, dnsmessage.TypeAAAA} {
		addrs, err := r.lookupType(ctx, name, t)
		if err != nil {
			lastErr = err
		}
		out = append(out, addrs...)
	}
	if len(out) == 0 {
		if lastErr == nil {
			lastErr = fmt.Errorf("dns: no addresses for %q", host)
		}
		return nil, lastErr
	}
	return sortV4First(out), nil
}

func (r *Resolver) lookupType(ctx context.Context, name string, t dnsmessage.Type) ([]netip.Addr, error) {
	n, err := dnsmessage.NewName(name)
	if err != nil {
		return nil, err
	}
	var id [2]byte
	randRead(id[:])
	bld := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: uint16(id[0])<<8 | uint16(id[1]), RecursionDesired: true})
	bld.StartQuestions()
	bld.Question(dnsmessage.Question{Name: n, Type: t, Class: dnsmessage.ClassINET})
	q, err := bld.Finish()
	if err != nil {
		return nil, err
	}
	resp := r.Respond(ctx, q, false)
	if isTruncated(resp) {
		resp = r.Respond(ctx, q, true)
	}
	var p dnsmessage.Parser
	h, err := p.Start(resp)
	if err != nil {
		return nil, fmt.Errorf("dns: no answer for %s", strings.TrimSuffix(name, "."))
	}
	switch h.RCode {
	case dnsmessage.RCodeSuccess:
	case dnsmessage.RCodeNameError:
		return nil, fmt.Errorf("dns: no such host %q", strings.TrimSuffix(name, "."))
	default:
		return nil, fmt.Errorf("dns: lookup of %s: %v", strings.TrimSuffix(name, "."), h.RCode)
	}
	p.SkipAllQuestions()
	var out []netip.Addr
	for {
		rh, err := p.AnswerHeader()
		if err != nil {
			break
		}
		switch rh.Type {
		case dnsmessage.TypeA:
			a, err := p.AResource()
			if err != nil {
				return out, nil
			}
			out = append(out, netip.AddrFrom4(a.A))
		case dnsmessage.TypeAAAA:
			a, err := p.AAAAResource()
			if err != nil {
				return out, nil
			}
			out = append(out, netip.AddrFrom16(a.AAAA).Unmap())
		default:
			if p.SkipAnswer() != nil {
				return out, nil
			}
		}
	}
	return out, nil
}

func sortV4First(a []netip.Addr) []netip.Addr {
	out := make([]netip.Addr, 0, len(a))
	for _, v4 := range []bool{true, false} { // a stable partition
		for _, x := range a {
			if x.Is4() == v4 {
				out = append(out, x)
			}
		}
	}
	return slices.Compact(out)
}

func randRead(b []byte) { rand.Read(b) }
