package tailcfg

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
)

// A peer entry and a delta as control sends them (values illustrative).
const sampleMap = `{"Node":{"ID":1,"StableID":"n1","Name":"self.example.ts.net.","User":1,
 "Key":"nodekey:0101010101010101010101010101010101010101010101010101010101010101",
 "Addresses":["100.64.0.1/32","fd7a:115c:a1e0:ab12:4843:cd96:6240:1/128"],"MachineAuthorized":true},
 "Peers":[{"ID":2,"Name":"peer.example.ts.net.","Key":"nodekey:0202020202020202020202020202020202020202020202020202020202020202",
 "DiscoKey":"discokey:0303030303030303030303030303030303030303030303030303030303030303",
 "Addresses":["100.64.0.2/32"],"Endpoints":["198.51.100.4:41641","[2001:db8::1]:41641"],"DERP":"127.3.3.40:7",
 "CapMap":{"some-cap":[{"x":1}]},"Online":true,"Cap":142,"SomeFutureField":{"a":[1,2]}}],
 "DERPMap":{"Regions":{"900":{"RegionID":900,"RegionCode":"test","Nodes":[{"Name":"900a","RegionID":900,"HostName":"127.0.0.1","DERPPort":4443,"InsecureForTests":true}]}},"omitDefaultRegions":true},
 "PacketFilter":[{"SrcIPs":["*"],"DstPorts":[{"IP":"*","Ports":{"First":0,"Last":65535}}]}],
 "PeersChangedPatch":[{"NodeID":2,"DERPRegion":3,"Online":false}]}`

func TestDecodeMapResponse(t *testing.T) {
	var m MapResponse
	if err := json.Unmarshal([]byte(sampleMap), &m); err != nil {
		t.Fatal(err)
	}
	if m.Node == nil || m.Node.ID != 1 || len(m.Node.Addresses) != 2 || !m.Node.MachineAuthorized {
		t.Fatalf("node = %+v", m.Node)
	}
	p := m.Peers[0]
	if p.HomeRegion() != 7 || p.DiscoKey[0] != 3 || len(p.Endpoints) != 2 || p.Endpoints[1].Port() != 41641 {
		t.Fatalf("peer = %+v", p)
	}
	if got := p.EffectiveAllowedIPs(); len(got) != 1 || got[0] != netip.MustParsePrefix("100.64.0.2/32") {
		t.Fatalf("allowed = %v", got)
	}
	if string(p.CapMap["some-cap"][0]) != `{"x":1}` {
		t.Fatalf("capmap = %s", p.CapMap["some-cap"][0])
	}
	r := m.DERPMap.Regions[900]
	if r == nil || r.Nodes[0].DERPPort != 4443 || !r.Nodes[0].InsecureForTests || !m.DERPMap.OmitDefaultRegions {
		t.Fatalf("derp = %+v", m.DERPMap)
	}
	if m.PacketFilter[0].DstPorts[0].Ports.Last != 65535 {
		t.Fatalf("filter = %+v", m.PacketFilter)
	}
	if pc := m.PeersChangedPatch[0]; pc.DERPRegion != 3 || pc.Online == nil || *pc.Online {
		t.Fatalf("patch = %+v", pc)
	}
}

func TestHomeRegionLegacy(t *testing.T) {
	for s, want := range map[string]int{"127.3.3.40:1": 1, "127.3.3.41:1": 0, "bogus": 0, "": 0} {
		n := Node{LegacyDERPString: s}
		if got := n.HomeRegion(); got != want {
			t.Errorf("%q: got %d want %d", s, got, want)
		}
	}
	n := Node{HomeDERP: 5, LegacyDERPString: "127.3.3.40:1"}
	if n.HomeRegion() != 5 {
		t.Fatal("HomeDERP must win")
	}
}

func TestMapRequestWire(t *testing.T) {
	b, err := json.Marshal(MapRequest{Version: CurrentCapabilityVersion, Compress: "zstd", KeepAlive: true, OmitPeers: true,
		Endpoints:     []netip.AddrPort{netip.MustParseAddrPort("[2001:db8::1]:41641")},
		EndpointTypes: []EndpointType{EndpointSTUN},
		Hostinfo:      &Hostinfo{Hostname: "h", NetInfo: &NetInfo{PreferredDERP: 900, WorkingUDP: NewOptBool(true)}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"Version":115`, `"OmitPeers":true`, `"Endpoints":["[2001:db8::1]:41641"]`, `"EndpointTypes":[2]`,
		`"PreferredDERP":900`, `"WorkingUDP":true`, `"DiscoKey":"discokey:0000`, `"NodeKey":"nodekey:0000`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("missing %s in %s", want, b)
		}
	}
	if strings.Contains(string(b), `"Stream"`) {
		t.Errorf("lite update must not carry Stream: %s", b)
	}
}

func TestOptBool(t *testing.T) {
	var ni NetInfo
	if err := json.Unmarshal([]byte(`{"WorkingUDP":true,"WorkingIPv6":"false","OSHasIPv6":null}`), &ni); err != nil {
		t.Fatal(err)
	}
	if ni.WorkingUDP != "true" || ni.WorkingIPv6 != "false" || ni.OSHasIPv6 != "" {
		t.Fatalf("decoded %+v", ni)
	}
	if err := json.Unmarshal([]byte(`{"WorkingUDP":1}`), &ni); err == nil {
		t.Fatal("number accepted as an optional boolean")
	}
	b, _ := json.Marshal(NetInfo{WorkingUDP: NewOptBool(false)})
	if string(b) != `{"WorkingUDP":false}` {
		t.Fatalf("encoded %s", b)
	}
}

func FuzzDecodeMapResponse(f *testing.F) {
	f.Add([]byte(sampleMap))
	f.Add([]byte(`{"KeepAlive":true}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var m MapResponse
		if json.Unmarshal(b, &m) == nil {
			for _, p := range m.Peers {
				if p != nil {
					p.HomeRegion()
					p.EffectiveAllowedIPs()
				}
			}
		}
	})
}
