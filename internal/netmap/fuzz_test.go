package netmap

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// fuzzSep separates the messages of one fuzz input.
var fuzzSep = []byte("\n--\n")

// FuzzDecode feeds sequences of arbitrary messages to a Decoder and a Map.
// Each message must decode as encoding/json decodes it: the same result when
// encoding/json accepts it, and an error when it is not well-formed JSON.
// The Map must never panic and its indexes must stay consistent.
func FuzzDecode(f *testing.F) {
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
	for _, c := range decodeCases {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
		m := New(Options{Now: func() time.Time { return now }})
		var d Decoder
		for i, msg := range bytes.Split(data, fuzzSep) {
			if i%3 == 2 {
				m.StartStream()
			}
			got, err := d.Decode(bytes.NewReader(msg))
			compareWithJSON(t, msg, got, err)
			if err != nil {
				continue
			}
			m.Apply(got)
			checkInvariants(t, m)
			// Exercise the readers.
			for _, p := range m.Peers() {
				for _, pfx := range p.Addresses {
					m.PeerForDst(pfx.Addr())
					m.PeerByIP(pfx.Addr())
				}
				m.PeerByID(p.ID)
				m.Resolve(p.Name)
				m.Resolve(p.ShortName())
				m.IsExpired(&p)
			}
			m.DERPMap()
			m.NextPeerExpiry()
		}
	})
}

// compareWithJSON checks the Decoder's result for msg against encoding/json.
func compareWithJSON(t *testing.T, msg []byte, got *Message, err error) {
	t.Helper()
	if repeatsMember(msg) || hasLongString(msg) {
		return // taken from their last occurrence; names cut at 64 KiB
	}
	resp, full, hasFull, changed, jerr := decodeRef(msg)
	var syntax *json.SyntaxError
	switch {
	case jerr == nil && err != nil:
		t.Fatalf("Decode failed where encoding/json did not: %v\n%q", err, msg)
	case errors.As(jerr, &syntax) && err == nil:
		t.Fatalf("Decode accepted malformed JSON (%v)\n%q", jerr, msg)
	case jerr != nil || err != nil:
		return
	}
	if !reflect.DeepEqual(got.MapResponse, resp) {
		t.Fatalf("MapResponse differs:\n got %+v\nwant %+v\n%q", got.MapResponse, resp, msg)
	}
	if got.peers.hasFull != hasFull || !reflect.DeepEqual(peersOf(got.peers.full), full) || !reflect.DeepEqual(peersOf(got.peers.changed), changed) {
		t.Fatalf("peers differ:\n got %v %+v %+v\nwant %v %+v %+v\n%q", got.peers.hasFull, peersOf(got.peers.full), peersOf(got.peers.changed), hasFull, full, changed, msg)
	}
}

// repeatsMember reports whether any object in msg (well-formed JSON) has
// two members whose names are equal ignoring case.
func repeatsMember(msg []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(msg))
	type frame struct {
		obj   bool
		names map[string]bool
		key   bool // the next string token is a member name
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err == io.EOF || err != nil {
			return false
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if s, ok := tok.(string); ok && top != nil && top.obj && top.key {
			k := strings.ToLower(s)
			if !utf8.ValidString(k) || strings.ContainsFunc(k, func(r rune) bool { return r >= utf8.RuneSelf }) {
				return true // leave Unicode folding aside
			}
			if top.names[k] {
				return true
			}
			top.names[k] = true
			top.key = false
			continue
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{obj: true, names: map[string]bool{}, key: true})
			continue
		case json.Delim('['):
			stack = append(stack, &frame{})
			continue
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
		if len(stack) > 0 && stack[len(stack)-1].obj {
			stack[len(stack)-1].key = true
		}
	}
}

// hasLongString reports whether msg might hold a string of 64 KiB or more.
func hasLongString(msg []byte) bool { return len(msg) >= 0xffff }
