package netmap

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/microlink-go/microlink/internal/tailcfg"
)

// decodeRef decodes msg with encoding/json and converts its peers the
// reference way.
func decodeRef(msg []byte) (resp *tailcfg.MapResponse, full []Peer, hasFull bool, changed []Peer, err error) {
	resp = new(tailcfg.MapResponse)
	if err := json.Unmarshal(msg, resp); err != nil {
		return nil, nil, false, nil, err
	}
	conv := func(nodes []*tailcfg.Node) (out []Peer) {
		for _, n := range nodes {
			if n != nil {
				out = append(out, refPeer(n))
			}
		}
		return out
	}
	full, hasFull, changed = conv(resp.Peers), len(resp.Peers) > 0, conv(resp.PeersChanged)
	resp.Peers, resp.PeersChanged = nil, nil
	return resp, full, hasFull, changed, nil
}

func peersOf(es []*entry) (out []Peer) {
	for _, e := range es {
		out = append(out, e.peer())
	}
	return out
}

// checkSameDecode decodes msg both ways and fails if the results differ.
func checkSameDecode(t *testing.T, d *Decoder, r io.Reader, msg []byte) {
	t.Helper()
	resp, full, hasFull, changed, err := decodeRef(msg)
	if err != nil {
		t.Fatalf("encoding/json: %v\n%s", err, msg)
	}
	got, err := d.Decode(r)
	if err != nil {
		t.Fatalf("Decode: %v\n%s", err, msg)
	}
	if !reflect.DeepEqual(got.MapResponse, resp) {
		t.Errorf("MapResponse differs:\n got %+v\nwant %+v", got.MapResponse, resp)
	}
	if got.peers.hasFull != hasFull {
		t.Errorf("hasFull %v, want %v", got.peers.hasFull, hasFull)
	}
	if g := peersOf(got.peers.full); !reflect.DeepEqual(g, full) {
		t.Errorf("Peers differ:\n got %+v\nwant %+v", g, full)
	}
	if g := peersOf(got.peers.changed); !reflect.DeepEqual(g, changed) {
		t.Errorf("PeersChanged differ:\n got %+v\nwant %+v", g, changed)
	}
}

// decodeCases are messages whose decoding must match encoding/json's.
var decodeCases = []string{
	`{"Node":` + mustJSON(selfNode()) + `,"Peers":[` + mustJSON(testNode(1)) + `,null,` + mustJSON(testNode(2)) + `],` +
		`"DERPMap":{"Regions":{"1":{"RegionID":1,"RegionCode":"a","Nodes":[{"Name":"1a","RegionID":1,"HostName":"h"}]},"9":null}},` +
		`"PacketFilter":[{"SrcIPs":["*"],"DstPorts":[{"IP":"*","Ports":{"First":0,"Last":65535}}]}],` +
		`"Domain":"example.com","UserProfiles":[{"ID":1,"LoginName":"u","DisplayName":"U"}]}`,
	`{"KeepAlive":true}`,
	` null `,
	`{}`,
	`{"peerschanged":[` + mustJSON(testNode(3)) + `],"PeersRemoved":[1],"PeersChangedPatch":[{"NodeID":2,"DERPRegion":4}]}`,
	`{"Peers":[],"PeersChanged":null,"OnlineChange":{"2":false},"DNSConfig":{"Domains":["x"]}}`,
	`{"Peers":[null]}`,
	`{"Peers":[` + mustJSON(testNode(3)) + `],"PeersChanged":[` + mustJSON(testNode(7)) + `]}`,
	// Names in any case, escapes, Unicode, invalid UTF-8 and lone
	// surrogates, numbers in every form encoding/json allows.
	`{"PEERS":[{"id":5,"NAME":"caf\u00e9.ts.net.","sTaBlEiD":"s\"\\\/\b\f\n\r\t","User":-0,` +
		`"Hostinfo":{"HOSTNAME":"CAF\u00c9","os":"\ud83d\ude00 \ud800 \udc00x \ud800\ud800\udc00 \ud800\n","IPNVersion":"1.2","NetInfo":{"X":[1,2.5e3,-0.1E-2,true,false,null,{}]}},` +
		`"Extra":{"a":[[[]]],"b":"\u0041"},"Extra2":1e9,"More":["x"],"KeyExpiry":null,"LastSeen":null,"Online":null}]}`,
	"{\"Peers\":[{\"ID\":6,\"Name\":\"bad\xff\xfe utf8 \xe2\x82.\",\"Hostinfo\":{\"OS\":\"\xc3\"}}]}",
	// The Kelvin sign folds to k: "\u212aey" names Key.
	`{"Peers":[{"ID":7,"\u212aey":"nodekey:` + strings.Repeat("0a", 32) + `","DiscoKey":"discokey:` + strings.Repeat("AB", 32) + `"}]}`,
	// Addresses: zero ones, IPv6, 4in6, zones, unusual forms netip accepts.
	`{"Peers":[{"ID":8,"Addresses":["100.64.0.8/32","",null,"fd7a:115c:a1e0::8/128","::ffff:1.2.3.4/128","0.0.0.0/0","10.0.0.0/8"],` +
		`"Endpoints":["1.2.3.4:0","1.2.3.4:00080","[fe80::1%eth0]:41641","[::ffff:1.2.3.4]:5","","255.255.255.255:65535",null],"HomeDERP":0,"DERP":"127.3.3.40:12"}]}`,
	// AllowedIPs: absent, null, empty, equal, different, overridden by
	// UnsignedPeerAPIOnly.
	`{"Peers":[{"ID":9,"Addresses":["100.64.0.9/32"]},{"ID":10,"Addresses":["100.64.0.10/32"],"AllowedIPs":null},` +
		`{"ID":11,"Addresses":["100.64.0.11/32"],"AllowedIPs":[]},{"ID":12,"Addresses":["100.64.0.12/32"],"AllowedIPs":["100.64.0.12/32"]},` +
		`{"ID":13,"Addresses":["100.64.0.13/32"],"AllowedIPs":["100.64.0.13/32","10.0.0.0/8"]},` +
		`{"ID":14,"Addresses":["100.64.0.14/32"],"AllowedIPs":["0.0.0.0/0"],"UnsignedPeerAPIOnly":true},{"ID":15,"AllowedIPs":[]}]}`,
	// Times: offsets, fractions, the zero time; legacy DERP strings.
	`{"PeersChanged":[{"ID":16,"KeyExpiry":"2030-01-02T03:04:05.123456789+05:30","LastSeen":"0001-01-01T00:00:00Z","DERP":"127.3.3.40:7"},` +
		`{"ID":17,"KeyExpiry":"1970-01-01T00:00:00Z","LastSeen":"2262-04-11T23:47:16.854775807Z","DERP":"1.2.3.4:7","HomeDERP":3},` +
		`{"ID":18,"DERP":"127.3.3.40:x","Online":true,"Expired":true,"IsWireGuardOnly":true},{"ID":19,"KeyExpiry":"9999-12-31T23:59:59Z"}]}`,
	// Hostinfo: a hostname that is the name's first label, or not.
	`{"Peers":[{"ID":22,"Name":"host22.ts.net.","Hostinfo":{"Hostname":"host22"}},{"ID":23,"Name":"host23.ts.net.","Hostinfo":{"Hostname":"HOST23"}},{"ID":25,"Hostinfo":null}]}`,
}

func TestDecodeMatchesUnmarshal(t *testing.T) {
	var d Decoder
	for _, msg := range decodeCases {
		checkSameDecode(t, &d, strings.NewReader(msg), []byte(msg))
		// Byte by byte: every value straddles a refill.
		checkSameDecode(t, &d, iotest.OneByteReader(strings.NewReader(msg)), []byte(msg))
	}
}

// TestDecodeRepeatedMembers: a member repeated in one object is taken from
// its last occurrence (with Hostinfo objects merged, as encoding/json does).
func TestDecodeRepeatedMembers(t *testing.T) {
	var d Decoder
	msg, err := d.Decode(strings.NewReader(`{"Domain":"a","Peers":[{"ID":1}],"Domain":"b","peers":[{"ID":2,"Name":"x","name":"y",` +
		`"Hostinfo":{"OS":"linux"},"Hostinfo":{"Hostname":"h"}},{"ID":3,"Hostinfo":{"OS":"linux"},"Hostinfo":null}]}`))
	if err != nil {
		t.Fatal(err)
	}
	got := peersOf(msg.peers.full)
	if msg.Domain != "b" || len(got) != 2 || got[0].ID != 2 || got[0].Name != "y" || got[0].OS != "linux" || got[0].Hostname != "h" || got[1].OS != "" {
		t.Fatalf("got %q %+v", msg.Domain, got)
	}
}

// TestDecodeLargeMessage decodes a netmap bigger than the read buffer, in
// small reads.
func TestDecodeLargeMessage(t *testing.T) {
	msg := syntheticNetmap(300)
	var d Decoder
	checkSameDecode(t, &d, iotest.HalfReader(bytes.NewReader(msg)), msg)
}

func TestDecodeErrors(t *testing.T) {
	var d Decoder
	for _, bad := range []string{
		``, ` `, `[]`, `{`, `{"Peers":`, `{"Peers":{}}`, `{"Peers":[1]}`, `{"Peers":[` + mustJSON(testNode(5)) + `]`,
		`{"Domain":"x"} {}`, `{"Domain":1}`, `{"Peers":[` + mustJSON(testNode(5)) + `],"Domain":5}`,
		`{"PeersChanged":[{"ID":"x"}]}`, `{"Peers":[{"ID":1.5}]}`, `{"Peers":[{"ID":1e3}]}`, `{"Peers":[{"ID":9223372036854775808}]}`,
		`{"Peers":[{"ID":01}]}`, `{"Peers":[{"ID":-}]}`, `{"Peers":[{"ID":1,}]}`, `{"Peers":[{,"ID":1}]}`, `{"Peers":[{"ID":1},]}`,
		`{"Peers":[{"Name":"a` + "\x01" + `"}]}`, `{"Peers":[{"Name":"\x"}]}`, `{"Peers":[{"Name":"\u12"}]}`, `{"Peers":[{"Name":5}]}`,
		`{"Peers":[{"Key":"nodekey:00"}]}`, `{"Peers":[{"Key":"mkey:` + strings.Repeat("00", 32) + `"}]}`, `{"Peers":[{"Key":1}]}`,
		`{"Peers":[{"KeyExpiry":"yesterday"}]}`, `{"Peers":[{"KeyExpiry":"2030-01-01T00:00:00\u005a"}]}`, `{"Peers":[{"LastSeen":5}]}`,
		`{"Peers":[{"Addresses":["1.2.3.4"]}]}`, `{"Peers":[{"Addresses":["1.2.3.04/32"]}]}`, `{"Peers":[{"Addresses":["1.2.3.4/33"]}]}`,
		`{"Peers":[{"Addresses":["1.2.3.4/032"]}]}`, `{"Peers":[{"Addresses":"1.2.3.4/32"}]}`, `{"Peers":[{"Addresses":[5]}]}`,
		`{"Peers":[{"Endpoints":["1.2.3.4:65536"]}]}`, `{"Peers":[{"Endpoints":["[1.2.3.4]:5"]}]}`, `{"Peers":[{"Endpoints":["::1:5"]}]}`,
		`{"Peers":[{"Online":"yes"}]}`, `{"Peers":[{"Hostinfo":[]}]}`, `{"Peers":[{"Hostinfo":{"OS":1}}]}`, `{"Peers":[{"HomeDERP":true}]}`,
		`{"Peers":[{"Extra":tru}]}`, `{"Peers":[{"Extra":[1 2]}]}`, `{"Peers":[{"Extra":{"a" 1}}]}`, `{"Peers":[{"Extra":nul}]}`,
		`{"Peers":[{"Extra":` + strings.Repeat("[", maxDepth+1) + strings.Repeat("]", maxDepth+1) + `}]}`,
		`{"Peers":[{"ID":1}]}x`, `"x"`, `5`,
	} {
		_, err := d.Decode(strings.NewReader(bad))
		if err == nil {
			t.Errorf("Decode(%.60q) accepted", bad)
		}
	}
	// A read error is reported as such.
	boom := errors.New("boom")
	if _, err := d.Decode(io.MultiReader(strings.NewReader(`{"Peers":[`), iotest.ErrReader(boom))); !errors.Is(err, boom) {
		t.Errorf("read error: %v", err)
	}
}

// TestDecodeNodeAllocs: a node costs its entry and its strings and
// nothing more, so decoding a large netmap leaves little garbage.
func TestDecodeNodeAllocs(t *testing.T) {
	msg := []byte(`{"Peers":[` + mustJSON(testNode(1)) + `]}`)
	var d Decoder
	r := bytes.NewReader(msg)
	if _, err := d.Decode(r); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		r.Reset(msg)
		d.j.reset(r)
		d.j.expect('{', "")
		d.j.readKey()
		if _, _, err := d.decodeNodes("Peers"); err != nil {
			t.Fatal(err)
		}
	})
	// The entry, its text, addresses and endpoints, and the list.
	if allocs > 5 {
		t.Fatalf("a node costs %v allocations", allocs)
	}
}

// snapshot captures the observable state of a Map for comparisons.
type snapshot struct {
	Self    Self
	Peers   []Peer
	DERP    *tailcfg.DERPMap
	Filter  []tailcfg.FilterRule
	DNS     *tailcfg.DNSConfig
	Domain  string
	Profile tailcfg.UserProfile
}

func snap(m *Map) snapshot {
	s, _ := m.Self()
	up, _ := m.UserProfile(1)
	return snapshot{s, m.Peers(), m.DERPMap(), m.FilterRules(), m.DNS(), m.Domain(), up}
}

func mustJSON(v any) string {
	var b bytes.Buffer
	if err := json.NewEncoder(&b).Encode(v); err != nil {
		panic(err)
	}
	return strings.TrimSpace(b.String())
}

// TestParseAddressesMatchNetip: the decoder's own address parsers agree
// with netip on what they accept, and never accept what netip rejects.
func TestParseAddressesMatchNetip(t *testing.T) {
	inputs := []string{
		"1.2.3.4/32", "0.0.0.0/0", "255.255.255.255/32", "1.2.3.4/33", "1.2.3.4/032", "1.2.3.04/8", "1.2.3/8", "1.2.3.4.5/8",
		"256.1.1.1/8", "1.2.3.4/", "1.2.3.4", "::/0", "::1/128", "::/129", "1::/16", "1:2:3:4:5:6:7:8/64", "1:2:3:4:5:6:7::/64",
		"1:2:3:4:5:6:7:8::/64", "1:2:3:4:5:6::7:8/64", "::1:2:3:4:5:6:7/64", "::1:2:3:4:5:6:7:8/64", "1:::2/64", ":1::/64", "1:/64",
		"1::2::3/64", "12345::/64", "fd7a:115c:a1e0::8/128", "FD7A:115C:A1E0:AB12:4843:CD96:6263:1/128", "::ffff:1.2.3.4/128",
		"fe80::1%eth0/64", "0001:0002::/32", "1:2:3:4:5:6:7:8:9/64", "1:2:3:4:5:6:7:8:/64", "::/00", "::/01", "1.2.3.4/+8",
	}
	ports := []string{
		"1.2.3.4:0", "1.2.3.4:65535", "1.2.3.4:65536", "1.2.3.4:00080", "1.2.3.4:", "1.2.3.4", "[::1]:5", "[::]:0", "[1:2:3:4:5:6:7:8]:9",
		"[::ffff:1.2.3.4]:5", "[fe80::1%eth0]:5", "[1.2.3.4]:5", "::1:5", "[::1]", "[::1]:", "[::1:5", "[1::2::3]:4", "1.2.3.4:+5", "1.2.3.4:5x",
	}
	for _, in := range inputs {
		want, werr := netip.ParsePrefix(in)
		b, err := parsePrefix(nil, []byte(in))
		if (err == nil) != (werr == nil) {
			t.Errorf("%q: error %v, netip %v", in, err, werr)
			continue
		}
		if err == nil {
			if got, _ := nextPrefix(string(b)); got != want {
				t.Errorf("%q: %v, netip %v", in, got, want)
			}
		}
	}
	for _, in := range ports {
		want, werr := netip.ParseAddrPort(in)
		b, err := parseAddrPort(nil, []byte(in))
		if (err == nil) != (werr == nil) {
			t.Errorf("%q: error %v, netip %v", in, err, werr)
			continue
		}
		if err == nil {
			if got, _ := nextAddrPort(string(b)); got != want {
				t.Errorf("%q: %v, netip %v", in, got, want)
			}
		}
	}
}

// FuzzParseAddresses checks the decoder's address parsers against netip.
func FuzzParseAddresses(f *testing.F) {
	for _, s := range []string{"1.2.3.4/32", "fd7a:115c:a1e0::8/128", "[::1]:5", "1.2.3.4:41641", "1:2:3:4:5:6:7::/64"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		if want, werr := netip.ParsePrefix(in); true {
			b, err := parsePrefix(nil, []byte(in))
			if in != "" && (err == nil) != (werr == nil) {
				t.Fatalf("prefix %q: error %v, netip %v", in, err, werr)
			}
			if got := unpackPrefixes(string(b)); err == nil && in != "" && (len(got) != 1 || got[0] != want) {
				t.Fatalf("prefix %q: %v, netip %v", in, got, want)
			}
		}
		if want, werr := netip.ParseAddrPort(in); true {
			b, err := parseAddrPort(nil, []byte(in))
			if in != "" && (err == nil) != (werr == nil) {
				t.Fatalf("addrport %q: error %v, netip %v", in, err, werr)
			}
			if got := unpackAddrPorts(string(b)); err == nil && in != "" && (len(got) != 1 || got[0] != want) {
				t.Fatalf("addrport %q: %v, netip %v", in, got, want)
			}
		}
	})
}

// TestResponseMembers checks that responseMembers names every field of
// MapResponse but the peer lists, by its JSON name, and that responseField
// gives each its own field.
func TestResponseMembers(t *testing.T) {
	typ := reflect.TypeFor[tailcfg.MapResponse]()
	var m tailcfg.MapResponse
	want := map[string]uintptr{}
	for i := range typ.NumField() {
		f := typ.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" {
			name = f.Name
		}
		if name == "Peers" || name == "PeersChanged" {
			continue
		}
		want[name] = reflect.ValueOf(&m).Elem().Field(i).Addr().Pointer()
	}
	for i, name := range responseMembers {
		addr, ok := want[name]
		if !ok {
			t.Errorf("member %q is not a field of MapResponse, or named twice", name)
			continue
		}
		if got := reflect.ValueOf(responseField(&m, i)).Pointer(); got != addr {
			t.Errorf("member %q decodes into another field", name)
		}
		delete(want, name)
	}
	for name := range want {
		t.Errorf("MapResponse field %q is missing from responseMembers", name)
	}
}
