package netmap

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/microlink-go/microlink/internal/tailcfg"
)

// fuzzSep separates the MapResponses of one fuzz input.
var fuzzSep = []byte("\n--\n")

// FuzzApply feeds sequences of arbitrary JSON MapResponses to Apply and to
// ApplyJSON, and checks that neither panics and that the indexes stay
// consistent with the peer set.
func FuzzApply(f *testing.F) {
	self := mustJSON(selfNode())
	f.Add([]byte(`{"Node":` + self + `,"Peers":[` + mustJSON(testNode(1)) + `,` + mustJSON(testNode(2)) + `]}` +
		"\n--\n" + `{"PeersChangedPatch":[{"NodeID":1,"DERPRegion":3,"Key":"nodekey:` + strings.Repeat("ab", 32) + `"},{"NodeID":9}]}` +
		"\n--\n" + `{"PeersRemoved":[2],"PeersChanged":[` + mustJSON(testNode(2)) + `],"OnlineChange":{"1":false},"PeerSeenChange":{"2":true}}`))
	f.Add([]byte(`{"Node":` + self + `,"DERPMap":{"Regions":{"1":null,"2":{"RegionID":2}},"HomeParams":{}}}` +
		"\n--\n" + `{"PacketFilters":{"*":null,"b":[{"SrcIPs":["*"]}]},"PacketFilter":[]}` +
		"\n--\n" + `{"KeepAlive":true,"ControlTime":"2030-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"Node":{"ID":1,"Addresses":["100.64.0.1/32"]},"Peers":[{"ID":2,"Addresses":["100.64.0.1/32","::ffff:100.64.0.1/128"],"AllowedIPs":["0.0.0.0/0"]},{"ID":2,"Name":"A.b."},null]}` +
		"\n--\n" + `{"PeersChanged":[{"ID":3,"Key":"nodekey:` + strings.Repeat("0", 63) + `1","Addresses":["100.64.0.1/32"]}]}` +
		"\n--\n" + `{"PeersRemoved":[2,3,3]}`))
	f.Add([]byte(`{}` + "\n--\n" + `{"Peers":[]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
		clock := func() time.Time { return now }
		a := New(Options{Now: clock})
		b := New(Options{Now: clock})
		for i, msg := range bytes.Split(data, fuzzSep) {
			if i%3 == 2 {
				a.StartStream()
				b.StartStream()
			}
			var resp tailcfg.MapResponse
			if json.Unmarshal(msg, &resp) == nil {
				a.Apply(&resp)
				checkInvariants(t, a)
			}
			b.ApplyJSON(bytes.NewReader(msg))
			checkInvariants(t, b)
			// Exercise the readers.
			for _, p := range b.Peers() {
				b.PeerByKey(p.Key)
				for _, pfx := range p.Addresses {
					b.PeerForDst(pfx.Addr())
				}
				b.Resolve(p.Name)
				b.Resolve(p.ShortName())
				b.IsExpired(&p)
			}
			b.DERPMap()
			b.NextPeerExpiry()
		}
	})
}
