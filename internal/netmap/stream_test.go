package netmap

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/microlink-go/microlink/internal/tailcfg"
)

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

func TestApplyJSONMatchesApply(t *testing.T) {
	msgs := []string{
		`{"Node":` + mustJSON(selfNode()) + `,"Peers":[` + mustJSON(testNode(1)) + `,null,` + mustJSON(testNode(2)) + `],` +
			`"DERPMap":{"Regions":{"1":{"RegionID":1,"RegionCode":"a","Nodes":[{"Name":"1a","RegionID":1,"HostName":"h"}]},"9":null}},` +
			`"PacketFilter":[{"SrcIPs":["*"],"DstPorts":[{"IP":"*","Ports":{"First":0,"Last":65535}}]}],` +
			`"Domain":"example.com","UserProfiles":[{"ID":1,"LoginName":"u","DisplayName":"U"}]}`,
		`{"KeepAlive":true}`,
		`{"peerschanged":[` + mustJSON(testNode(3)) + `],"PeersRemoved":[1],"PeersChangedPatch":[{"NodeID":2,"DERPRegion":4}]}`,
		`{"Peers":[],"PeersChanged":null,"OnlineChange":{"2":false},"DNSConfig":{"Domains":["x"]}}`,
		`{"Peers":[` + mustJSON(testNode(3)) + `],"PeersChanged":[` + mustJSON(testNode(7)) + `]}`,
	}
	a, b := New(Options{}), New(Options{})
	for i, msg := range msgs {
		var resp tailcfg.MapResponse
		if err := json.Unmarshal([]byte(msg), &resp); err != nil {
			t.Fatalf("msg %d: %v", i, err)
		}
		ca, erra := a.Apply(&resp)
		cb, errb := b.ApplyJSON(strings.NewReader(msg))
		if erra != nil || errb != nil {
			t.Fatalf("msg %d: %v / %v", i, erra, errb)
		}
		checkInvariants(t, b)
		if !reflect.DeepEqual(ca, cb) {
			t.Errorf("msg %d: changes differ:\n%+v\n%+v", i, ca, cb)
		}
		if sa, sb := snap(a), snap(b); !reflect.DeepEqual(sa, sb) {
			t.Errorf("msg %d: state differs:\n%+v\n%+v", i, sa, sb)
		}
	}
	if b.NumPeers() != 1 {
		t.Fatalf("peers = %d", b.NumPeers())
	}
}

func TestApplyJSONErrors(t *testing.T) {
	m := newTestMap(t, 1)
	before := snap(m)
	for _, bad := range []string{
		``, `[]`, `{`, `{"Peers":`, `{"Peers":{}}`, `{"Peers":[1]}`, `{"Peers":[` + mustJSON(testNode(5)) + `]`,
		`{"Domain":"x"} {}`, `{"Domain":1}`, `{"Peers":[` + mustJSON(testNode(5)) + `],"Domain":5}`,
		`{"PeersChanged":[{"ID":"x"}]}`, `null`,
	} {
		if _, err := m.ApplyJSON(strings.NewReader(bad)); err == nil {
			t.Errorf("ApplyJSON(%q) accepted", bad)
		}
	}
	if !reflect.DeepEqual(before, snap(m)) {
		t.Fatal("a rejected message changed the map")
	}
}

func mustJSON(v any) string {
	var b bytes.Buffer
	if err := json.NewEncoder(&b).Encode(v); err != nil {
		panic(err)
	}
	return strings.TrimSpace(b.String())
}
