package dns

import (
	"context"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// FuzzRespond: no query crashes the resolver, and every answer parses and
// carries the query's ID.
func FuzzRespond(f *testing.F) {
	f.Add(makeQuery(f, 1, "laptop.", dnsmessage.TypeA, 0))
	f.Add(makeQuery(f, 2, "laptop.tail1.ts.net.", dnsmessage.TypeAAAA, 1232))
	f.Add(makeQuery(f, 3, "2.0.64.100.in-addr.arpa.", dnsmessage.TypePTR, 0))
	f.Add(makeQuery(f, 4, "nope.tail1.ts.net.", dnsmessage.TypeALL, 4096))
	f.Add([]byte{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c})
	cfg := baseConfig()
	cfg.Upstream = nil
	r := newTestResolver(f, cfg)
	f.Fuzz(func(t *testing.T, msg []byte) {
		for _, tcp := range []bool{false, true} {
			resp := r.Respond(context.Background(), msg, tcp)
			if resp == nil {
				continue
			}
			var p dnsmessage.Parser
			h, err := p.Start(resp)
			if err != nil {
				t.Fatalf("answer does not parse: %v", err)
			}
			if len(msg) < 2 || h.ID != uint16(msg[0])<<8|uint16(msg[1]) || !h.Response {
				t.Fatalf("answer header %+v", h)
			}
			if !tcp && len(resp) > maxUDPSize {
				t.Fatalf("UDP answer of %d bytes", len(resp))
			}
		}
	})
}
