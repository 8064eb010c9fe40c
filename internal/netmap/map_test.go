package netmap

import (
	"encoding/json"
	"errors"
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/microlink-go/microlink/internal/key"
	"github.com/microlink-go/microlink/internal/tailcfg"
)

func TestFirstMessageNeedsNode(t *testing.T) {
	m := New(Options{})
	// Keep-alives before the first message are fine.
	if _, err := applyResp(m, &tailcfg.MapResponse{KeepAlive: true}); err != nil {
		t.Fatalf("keep-alive: %v", err)
	}
	_, err := applyResp(m, &tailcfg.MapResponse{Peers: []*tailcfg.Node{testNode(1)}})
	if !errors.Is(err, ErrNoSelfNode) {
		t.Fatalf("err = %v, want ErrNoSelfNode", err)
	}
	if m.NumPeers() != 0 {
		t.Fatal("rejected message changed the peers")
	}
	c := mustApply(t, m, &tailcfg.MapResponse{Node: selfNode(), Peers: []*tailcfg.Node{testNode(1)}})
	if !c.SelfChanged || !c.Full || !slices.Equal(c.PeersAdded, []tailcfg.NodeID{1}) {
		t.Fatalf("changes = %+v", c)
	}
	// Later deltas need no Node.
	mustApply(t, m, &tailcfg.MapResponse{PeersRemoved: []tailcfg.NodeID{1}})
	// A new stream needs one again.
	m.StartStream()
	if _, err := applyResp(m, &tailcfg.MapResponse{Domain: "x"}); !errors.Is(err, ErrNoSelfNode) {
		t.Fatalf("after StartStream err = %v", err)
	}
}

func TestSelf(t *testing.T) {
	m := newTestMap(t)
	s, ok := m.Self()
	if !ok || s.Name != "me.example.ts.net." || !s.MachineAuthorized || len(s.Addresses) != 2 || s.HomeDERP != 1 {
		t.Fatalf("self = %+v", s)
	}
	if !m.SelfKeyExpiry().Equal(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("SelfKeyExpiry = %v", m.SelfKeyExpiry())
	}
	n := selfNode()
	if c := mustApply(t, m, &tailcfg.MapResponse{Node: n}); c.SelfChanged {
		t.Fatal("same self reported as changed")
	}
	n = selfNode()
	n.KeyExpiry = time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)
	n.CapMap = map[string][]json.RawMessage{"b": nil, "a": nil}
	if c := mustApply(t, m, &tailcfg.MapResponse{Node: n}); !c.SelfChanged {
		t.Fatal("self change not reported")
	}
	if s, _ := m.Self(); s.KeyExpiry.Year() != 2031 || !slices.Equal(s.CapMapKeys, []string{"a", "b"}) {
		t.Fatalf("self = %+v", s)
	}
}

func TestFullReplace(t *testing.T) {
	m := newTestMap(t, 1, 2, 3)
	changed2 := testNode(2)
	changed2.Endpoints = nil
	c := mustApply(t, m, &tailcfg.MapResponse{
		Peers: []*tailcfg.Node{testNode(4), changed2, testNode(3)},
		// Ignored when Peers is present.
		PeersChanged:      []*tailcfg.Node{testNode(9)},
		PeersRemoved:      []tailcfg.NodeID{3},
		PeersChangedPatch: []*tailcfg.PeerChange{{NodeID: 3, DERPRegion: 7}},
		OnlineChange:      map[tailcfg.NodeID]bool{3: false},
	})
	if got := peerIDs(m); !slices.Equal(got, []tailcfg.NodeID{2, 3, 4}) {
		t.Fatalf("peers = %v", got)
	}
	if !c.Full || !slices.Equal(c.PeersAdded, []tailcfg.NodeID{4}) ||
		!slices.Equal(c.PeersRemoved, []tailcfg.NodeID{1}) || !slices.Equal(c.PeersChanged, []tailcfg.NodeID{2}) {
		t.Fatalf("changes = %+v", c)
	}
	if p, _ := m.PeerByID(3); p.HomeDERP != 1 || !p.Online {
		t.Fatalf("peer 3 patched despite full list: %+v", p)
	}
	if _, ok := peerByKey(m, nodeKey(1)); ok {
		t.Fatal("removed peer still indexed by key")
	}
	// Shrinking a lot takes the rebuild path.
	c = mustApply(t, m, &tailcfg.MapResponse{Peers: []*tailcfg.Node{testNode(4)}})
	if got := peerIDs(m); !slices.Equal(got, []tailcfg.NodeID{4}) || !slices.Equal(c.PeersRemoved, []tailcfg.NodeID{2, 3}) {
		t.Fatalf("peers = %v changes = %+v", got, c)
	}
	// Duplicate IDs: the last wins.
	dup := testNode(5)
	dup.Name = "second.example.ts.net."
	mustApply(t, m, &tailcfg.MapResponse{Peers: []*tailcfg.Node{testNode(5), nil, dup}})
	if p, _ := m.PeerByID(5); p.Name != "second.example.ts.net." || m.NumPeers() != 1 {
		t.Fatalf("dup = %+v, n = %d", p, m.NumPeers())
	}
}

func TestFirstMessageEmptyPeersClears(t *testing.T) {
	m := newTestMap(t, 1, 2)
	m.StartStream()
	c := mustApply(t, m, &tailcfg.MapResponse{Node: selfNode()})
	if m.NumPeers() != 0 || !c.Full || len(c.PeersRemoved) != 2 {
		t.Fatalf("n = %d, changes = %+v", m.NumPeers(), c)
	}
	// Without StartStream a message with no Peers is a delta.
	m = newTestMap(t, 1, 2)
	if c := mustApply(t, m, &tailcfg.MapResponse{Node: selfNode()}); c.Full || m.NumPeers() != 2 {
		t.Fatalf("delta treated as full: %+v", c)
	}
}

func TestPeersChangedAndRemoved(t *testing.T) {
	m := newTestMap(t, 1, 2)
	n2 := testNode(2)
	n2.Key = nodeKey(200)
	n2.Addresses = []netip.Prefix{netip.MustParsePrefix("100.99.0.2/32")}
	c := mustApply(t, m, &tailcfg.MapResponse{
		PeersChanged: []*tailcfg.Node{testNode(3), n2, testNode(1)},
		PeersRemoved: []tailcfg.NodeID{1, 77},
	})
	// Removal is applied before the upsert, so 1 comes back.
	if got := peerIDs(m); !slices.Equal(got, []tailcfg.NodeID{1, 2, 3}) {
		t.Fatalf("peers = %v", got)
	}
	if !slices.Equal(c.PeersAdded, []tailcfg.NodeID{3, 1}) || !slices.Equal(c.PeersChanged, []tailcfg.NodeID{2}) ||
		!slices.Equal(c.PeersRemoved, []tailcfg.NodeID{1}) {
		t.Fatalf("changes = %+v", c)
	}
	if _, ok := peerByKey(m, nodeKey(2)); ok {
		t.Fatal("old key still indexed")
	}
	if p, ok := peerByKey(m, nodeKey(200)); !ok || p.ID != 2 {
		t.Fatal("new key not indexed")
	}
	if _, ok := m.PeerByIP(v4(2)); ok {
		t.Fatal("old address still indexed")
	}
	if p, ok := m.PeerByIP(netip.MustParseAddr("100.99.0.2")); !ok || p.ID != 2 {
		t.Fatal("new address not indexed")
	}
	// An equal upsert is no change.
	if c := mustApply(t, m, &tailcfg.MapResponse{PeersChanged: []*tailcfg.Node{testNode(3)}}); !c.Empty() {
		t.Fatalf("equal upsert: %+v", c)
	}
}

func TestPeersChangedPatch(t *testing.T) {
	m := newTestMap(t, 1, 2)
	nk, dk := nodeKey(900), discoKey(900)
	online := false
	seen := time.Date(2025, 5, 5, 5, 5, 5, 0, time.FixedZone("x", 3600))
	exp := time.Date(2026, 6, 6, 0, 0, 0, 0, time.UTC)
	eps := []netip.AddrPort{netip.MustParseAddrPort("[2001:db8::1]:1")}
	c := mustApply(t, m, &tailcfg.MapResponse{PeersChangedPatch: []*tailcfg.PeerChange{
		{NodeID: 1, DERPRegion: 9, Cap: 120, Endpoints: eps, Key: &nk, DiscoKey: &dk, Online: &online, LastSeen: &seen, KeyExpiry: &exp},
		{NodeID: 2, Endpoints: []netip.AddrPort{}},
		{NodeID: 42, DERPRegion: 3}, // unknown: ignored
		nil,
		{NodeID: 1}, // nothing set: no change, not listed twice
	}})
	if !slices.Equal(c.PeersChanged, []tailcfg.NodeID{1, 2}) || len(c.PeersAdded) != 0 {
		t.Fatalf("changes = %+v", c)
	}
	p, _ := m.PeerByID(1)
	if p.HomeDERP != 9 || !slices.Equal(p.Endpoints, eps) || p.Key != nk || p.DiscoKey != dk ||
		p.Online || !p.LastSeen.Equal(seen) || p.LastSeen.Location() != time.UTC || !p.KeyExpiry.Equal(exp) {
		t.Fatalf("patched = %+v", p)
	}
	if q, ok := peerByDisco(m, dk); !ok || q.ID != 1 {
		t.Fatal("patched disco key not indexed")
	}
	if _, ok := peerByDisco(m, discoKey(1)); ok {
		t.Fatal("old disco key still indexed")
	}
	if p2, _ := m.PeerByID(2); len(p2.Endpoints) != 0 {
		t.Fatalf("empty endpoint patch kept %v", p2.Endpoints)
	}
	if m.NumPeers() != 2 {
		t.Fatal("patch for unknown ID added a peer")
	}
}

func TestSeenAndOnlineChange(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	m := New(Options{Now: func() time.Time { return now }})
	n2 := testNode(2)
	n2.LastSeen = &now
	mustApply(t, m, &tailcfg.MapResponse{Node: selfNode(), Peers: []*tailcfg.Node{testNode(1), n2, testNode(3)}})
	now = now.Add(time.Hour)
	c := mustApply(t, m, &tailcfg.MapResponse{
		PeerSeenChange: map[tailcfg.NodeID]bool{1: true, 2: false, 55: true},
		OnlineChange:   map[tailcfg.NodeID]bool{3: false, 56: true},
	})
	slices.Sort(c.PeersChanged)
	if !slices.Equal(c.PeersChanged, []tailcfg.NodeID{1, 2, 3}) {
		t.Fatalf("changes = %+v", c)
	}
	if c.PathsChanged {
		t.Fatal("online and last-seen changes reported as path changes")
	}
	p1, _ := m.PeerByID(1)
	p2, _ := m.PeerByID(2)
	p3, _ := m.PeerByID(3)
	if !p1.LastSeen.Equal(now) || !p2.LastSeen.IsZero() || p3.Online || !p1.Online {
		t.Fatalf("p1 %v p2 %v p3 %v", p1.LastSeen, p2.LastSeen, p3.Online)
	}
}

func TestLegacyDERPString(t *testing.T) {
	m := New(Options{})
	a, b, c := testNode(1), testNode(2), testNode(3)
	a.HomeDERP, a.LegacyDERPString = 0, "127.3.3.40:12"
	b.HomeDERP, b.LegacyDERPString = 0, "10.0.0.1:12" // not the magic IP
	c.HomeDERP, c.LegacyDERPString = 5, "127.3.3.40:12"
	mustApply(t, m, &tailcfg.MapResponse{Node: selfNode(), Peers: []*tailcfg.Node{a, b, c}})
	for id, want := range map[tailcfg.NodeID]int{1: 12, 2: 0, 3: 5} {
		if p, _ := m.PeerByID(id); p.HomeDERP != want {
			t.Errorf("peer %d HomeDERP = %d, want %d", id, p.HomeDERP, want)
		}
	}
}

func TestAllowedIPs(t *testing.T) {
	m := New(Options{})
	plain := testNode(1)    // AllowedIPs nil: same as Addresses
	explicit := testNode(2) // AllowedIPs equal to Addresses, sent explicitly
	explicit.AllowedIPs = slices.Clone(explicit.Addresses)
	router := testNode(3)
	router.AllowedIPs = append(slices.Clone(router.Addresses), netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("10.1.0.0/16"))
	exit := testNode(4)
	exit.AllowedIPs = append(slices.Clone(exit.Addresses), netip.MustParsePrefix("0.0.0.0/0"))
	apiOnly := testNode(5)
	apiOnly.AllowedIPs = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}
	apiOnly.UnsignedPeerAPIOnly = true
	mustApply(t, m, &tailcfg.MapResponse{Node: selfNode(), Peers: []*tailcfg.Node{plain, explicit, router, exit, apiOnly}})

	for _, id := range []tailcfg.NodeID{1, 2, 5} {
		p, _ := m.PeerByID(id)
		if p.HasOwnAllowedIPs() || !slices.Equal(p.AllowedIPs, p.Addresses) {
			t.Errorf("peer %d AllowedIPs = %v, Addresses %v", id, p.AllowedIPs, p.Addresses)
		}
	}
	for dst, want := range map[string]tailcfg.NodeID{
		v4(1).String(): 1, v6(2).String(): 2, "10.1.2.3": 3, "10.2.0.1": 3, "8.8.8.8": 4,
		"::ffff:" + v4(1).String(): 1,
	} {
		if p, ok := m.PeerForDst(netip.MustParseAddr(dst)); !ok || p.ID != want {
			t.Errorf("PeerForDst(%s) = %d %v, want %d", dst, p.ID, ok, want)
		}
	}
	if _, ok := m.PeerForDst(netip.MustParseAddr("2001:db8::1")); ok {
		t.Error("PeerForDst found a route for an unrouted v6 address")
	}
}

func TestDERPMapMerge(t *testing.T) {
	region := func(id int) *tailcfg.DERPRegion {
		return &tailcfg.DERPRegion{RegionID: id, RegionCode: "r", Nodes: []*tailcfg.DERPNode{{Name: "1a", RegionID: id, HostName: "derp.example"}}}
	}
	m := newTestMap(t)
	c := mustApply(t, m, &tailcfg.MapResponse{DERPMap: &tailcfg.DERPMap{
		Regions:    map[int]*tailcfg.DERPRegion{1: region(1), 2: region(2), 3: nil},
		HomeParams: &tailcfg.DERPHomeParams{RegionScore: map[int]float64{1: 2}},
	}})
	dm := m.DERPMap()
	if !c.DERPMapChanged || len(dm.Regions) != 2 || dm.HomeParams.RegionScore[1] != 2 {
		t.Fatalf("changed %v, map %+v", c.DERPMapChanged, dm)
	}
	// The copy is deep.
	dm.Regions[1].Nodes[0].HostName = "mutated"
	delete(dm.Regions, 2)
	if dm2 := m.DERPMap(); dm2.Regions[1].Nodes[0].HostName != "derp.example" || len(dm2.Regions) != 2 {
		t.Fatal("DERPMap returned shared state")
	}

	tests := []struct {
		name        string
		in          *tailcfg.DERPMap
		wantRegions []int
		wantScore   map[int]float64
		changed     bool
	}{
		{"nil map unchanged", nil, []int{1, 2}, map[int]float64{1: 2}, false},
		{"regions nil keeps", &tailcfg.DERPMap{}, []int{1, 2}, map[int]float64{1: 2}, false},
		{"regionscore nil keeps", &tailcfg.DERPMap{HomeParams: &tailcfg.DERPHomeParams{}}, []int{1, 2}, map[int]float64{1: 2}, false},
		{"new score", &tailcfg.DERPMap{HomeParams: &tailcfg.DERPHomeParams{RegionScore: map[int]float64{2: 0.5}}}, []int{1, 2}, map[int]float64{2: 0.5}, true},
		{"new regions, null dropped", &tailcfg.DERPMap{Regions: map[int]*tailcfg.DERPRegion{4: region(4), 5: nil}}, []int{4}, map[int]float64{2: 0.5}, true},
	}
	for _, tc := range tests {
		c := mustApply(t, m, &tailcfg.MapResponse{DERPMap: tc.in})
		dm := m.DERPMap()
		var ids []int
		for id := range dm.Regions {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		if !slices.Equal(ids, tc.wantRegions) || !reflect.DeepEqual(dm.HomeParams.RegionScore, tc.wantScore) || c.DERPMapChanged != tc.changed {
			t.Errorf("%s: regions %v score %v changed %v", tc.name, ids, dm.HomeParams.RegionScore, c.DERPMapChanged)
		}
	}
}

func TestDERPMapFromJSONNullRegion(t *testing.T) {
	m := newTestMap(t)
	var resp tailcfg.MapResponse
	if err := json.Unmarshal([]byte(`{"DERPMap":{"Regions":{"1":{"RegionID":1,"Nodes":[]},"2":null}}}`), &resp); err != nil {
		t.Fatal(err)
	}
	mustApply(t, m, &resp)
	if dm := m.DERPMap(); len(dm.Regions) != 1 || dm.Regions[1] == nil {
		t.Fatalf("regions = %v", dm.Regions)
	}
}

func rule(src string) tailcfg.FilterRule {
	return tailcfg.FilterRule{SrcIPs: []string{src}, DstPorts: []tailcfg.NetPortRange{{IP: "*", Ports: tailcfg.PortRange{First: 0, Last: 65535}}}}
}

func srcs(rules []tailcfg.FilterRule) []string {
	out := []string{}
	for _, r := range rules {
		out = append(out, r.SrcIPs...)
	}
	return out
}

func TestPacketFilters(t *testing.T) {
	m := newTestMap(t)
	if m.FilterRules() != nil {
		t.Fatal("filter before any was sent")
	}
	steps := []struct {
		name    string
		base    []tailcfg.FilterRule
		named   map[string][]tailcfg.FilterRule
		want    []string
		changed bool
	}{
		{"nil unchanged", nil, nil, nil, false},
		{"empty base denies all", []tailcfg.FilterRule{}, nil, []string{}, true},
		{"base", []tailcfg.FilterRule{rule("a")}, nil, []string{"a"}, true},
		{"named sorted", nil, map[string][]tailcfg.FilterRule{"zz": {rule("z")}, "aa": {rule("x"), rule("y")}}, []string{"x", "y", "a", "z"}, true},
		{"same again", nil, map[string][]tailcfg.FilterRule{"zz": {rule("z")}}, []string{"x", "y", "a", "z"}, false},
		{"nil deletes one", nil, map[string][]tailcfg.FilterRule{"aa": nil}, []string{"a", "z"}, true},
		{"base replaced via name", nil, map[string][]tailcfg.FilterRule{"base": {rule("b")}}, []string{"b", "z"}, true},
		{"star clears first", nil, map[string][]tailcfg.FilterRule{"*": nil, "m": {rule("m")}}, []string{"m"}, true},
		{"star non-nil is ignored", nil, map[string][]tailcfg.FilterRule{"*": {rule("s")}}, []string{"m"}, false},
		{"PacketFilter then star clear", []tailcfg.FilterRule{rule("p")}, map[string][]tailcfg.FilterRule{"*": nil}, []string{}, true},
	}
	for _, s := range steps {
		c := mustApply(t, m, &tailcfg.MapResponse{PacketFilter: s.base, PacketFilters: s.named})
		got := m.FilterRules()
		if s.want == nil {
			if got != nil {
				t.Errorf("%s: got %v", s.name, srcs(got))
			}
		} else if got == nil || !slices.Equal(srcs(got), s.want) {
			t.Errorf("%s: got %v (nil %v), want %v", s.name, srcs(got), got == nil, s.want)
		}
		if c.FilterChanged != s.changed {
			t.Errorf("%s: changed = %v", s.name, c.FilterChanged)
		}
	}
}

func TestPacketFilterJSONEmptyIsDenyAll(t *testing.T) {
	m := newTestMap(t)
	mustApply(t, m, &tailcfg.MapResponse{PacketFilter: []tailcfg.FilterRule{rule("a")}})
	var resp tailcfg.MapResponse
	if err := json.Unmarshal([]byte(`{"PacketFilter":[]}`), &resp); err != nil {
		t.Fatal(err)
	}
	if c := mustApply(t, m, &resp); !c.FilterChanged || m.FilterRules() == nil || len(m.FilterRules()) != 0 {
		t.Fatalf("changed %v rules %v", c.FilterChanged, m.FilterRules())
	}
	if err := json.Unmarshal([]byte(`{"PacketFilters":{"*":null,"x":[]}}`), &resp); err != nil {
		t.Fatal(err)
	}
}

func TestNewStreamResetsFiltersAndProfiles(t *testing.T) {
	m := newTestMap(t)
	mustApply(t, m, &tailcfg.MapResponse{
		PacketFilters: map[string][]tailcfg.FilterRule{"extra": {rule("e")}},
		UserProfiles:  []tailcfg.UserProfile{{ID: 7, LoginName: "a@b"}},
	})
	m.StartStream()
	c := mustApply(t, m, &tailcfg.MapResponse{Node: selfNode(), PacketFilter: []tailcfg.FilterRule{rule("b")}})
	if got := srcs(m.FilterRules()); !slices.Equal(got, []string{"b"}) || !c.FilterChanged {
		t.Fatalf("filter after new stream = %v", got)
	}
	if _, ok := m.UserProfile(7); ok || !c.UserProfilesChanged {
		t.Fatal("user profile survived a new stream")
	}
}

func TestDNSDomainProfiles(t *testing.T) {
	m := newTestMap(t)
	dns := &tailcfg.DNSConfig{Domains: []string{"example.ts.net"}, Proxied: true}
	c := mustApply(t, m, &tailcfg.MapResponse{DNSConfig: dns, Domain: "example.com",
		UserProfiles: []tailcfg.UserProfile{{ID: 1, LoginName: "one"}, {ID: 2, LoginName: "two"}}})
	if !c.DNSChanged || !c.DomainChanged || !c.UserProfilesChanged || m.DNS() != dns || m.Domain() != "example.com" {
		t.Fatalf("changes %+v", c)
	}
	c = mustApply(t, m, &tailcfg.MapResponse{UserProfiles: []tailcfg.UserProfile{{ID: 2, LoginName: "two2"}, {ID: 3, LoginName: "three"}}})
	if c.DNSChanged || c.DomainChanged || !c.UserProfilesChanged || m.DNS() != dns || m.Domain() != "example.com" {
		t.Fatalf("nil DNS / empty Domain changed something: %+v", c)
	}
	for id, want := range map[tailcfg.UserID]string{1: "one", 2: "two2", 3: "three"} {
		if up, ok := m.UserProfile(tailcfg.UserID(id)); !ok || up.LoginName != want {
			t.Errorf("profile %d = %+v", id, up)
		}
	}
	if c := mustApply(t, m, &tailcfg.MapResponse{UserProfiles: []tailcfg.UserProfile{{ID: 3, LoginName: "three"}}}); c.UserProfilesChanged {
		t.Error("unchanged profile reported")
	}
}

func TestKeepAliveOnlySkew(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	m := New(Options{Now: func() time.Time { return now }})
	mustApply(t, m, &tailcfg.MapResponse{Node: selfNode()})
	ct := now.Add(90 * time.Second)
	c := mustApply(t, m, &tailcfg.MapResponse{KeepAlive: true, ControlTime: &ct, Domain: "ignored",
		PeersChanged: []*tailcfg.Node{testNode(1)}})
	if !c.Empty() || m.Domain() != "" || m.NumPeers() != 0 {
		t.Fatalf("keep-alive applied content: %+v", c)
	}
	if m.ClockSkew() != 90*time.Second || !m.Now().Equal(ct) {
		t.Fatalf("skew = %v", m.ClockSkew())
	}
}

func TestExpiryWithSkew(t *testing.T) {
	local := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	m := New(Options{Now: func() time.Time { return local }})
	soon := testNode(1)
	soon.KeyExpiry = local.Add(30 * time.Minute)
	never := testNode(2)
	never.KeyExpiry = time.Time{}
	flagged := testNode(3)
	flagged.Expired = true
	later := testNode(4)
	later.KeyExpiry = local.Add(3 * time.Hour)
	ct := local.Add(-time.Hour) // control's clock is an hour behind
	mustApply(t, m, &tailcfg.MapResponse{Node: selfNode(), ControlTime: &ct, Peers: []*tailcfg.Node{soon, never, flagged, later}})

	check := func(when string, want map[tailcfg.NodeID]bool) {
		t.Helper()
		for id, w := range want {
			p, _ := m.PeerByID(id)
			if got := m.IsExpired(&p); got != w {
				t.Errorf("%s: peer %d expired = %v, want %v", when, id, got, w)
			}
		}
	}
	// Local clock says 1 is 30 min from expiry; control time is an hour earlier.
	check("start", map[tailcfg.NodeID]bool{1: false, 2: false, 3: true, 4: false})
	local = local.Add(45 * time.Minute) // past expiry locally, not by control time
	check("+45m", map[tailcfg.NodeID]bool{1: false, 2: false, 3: true, 4: false})
	if next := m.NextPeerExpiry(); !next.Equal(soon.KeyExpiry) {
		t.Errorf("NextPeerExpiry = %v", next)
	}
	local = local.Add(time.Hour) // now past by control time too
	check("+1h45m", map[tailcfg.NodeID]bool{1: true, 2: false, 3: true, 4: false})
	if next := m.NextPeerExpiry(); !next.Equal(later.KeyExpiry) {
		t.Errorf("NextPeerExpiry = %v", next)
	}
	// Control's clock ahead instead.
	ct2 := local.Add(2 * time.Hour)
	mustApply(t, m, &tailcfg.MapResponse{KeepAlive: true, ControlTime: &ct2})
	check("skew ahead", map[tailcfg.NodeID]bool{4: true})
}

func TestLookups(t *testing.T) {
	m := newTestMap(t, 1, 2, 3)
	if p, ok := peerByKey(m, nodeKey(2)); !ok || p.ID != 2 {
		t.Fatal("PeerByKey")
	}
	if _, ok := peerByKey(m, key.NodePublic{}); ok {
		t.Fatal("zero key found a peer")
	}
	if p, ok := peerByDisco(m, discoKey(3)); !ok || p.ID != 3 {
		t.Fatal("PeerByDisco")
	}
	if p, ok := m.PeerByIP(v6(1)); !ok || p.ID != 1 {
		t.Fatal("PeerByIP v6")
	}
	if p, ok := m.PeerByIP(netip.AddrFrom16(v4(3).As16())); !ok || p.ID != 3 {
		t.Fatal("PeerByIP v4-mapped")
	}
	if _, ok := m.PeerByIP(v4(1000)); ok {
		t.Fatal("PeerByIP found self as a peer")
	}
	p, _ := m.PeerByID(1)
	if p.Hostname != "host1" || p.OS != "linux" || p.ShortName() != "host1" || p.StableID != "n1CNTRL" {
		t.Fatalf("peer = %+v", p)
	}
	// A returned peer is a copy.
	p.Name = "changed"
	if q, _ := m.PeerByID(1); q.Name == "changed" {
		t.Fatal("PeerByID returned shared state")
	}
	n := 0
	m.ForEachPeer(func(*Peer) bool { n++; return n < 2 })
	if n != 2 {
		t.Fatalf("ForEachPeer did not stop: %d", n)
	}
}

func TestPeersSorted(t *testing.T) {
	m := New(Options{})
	a, b, c := testNode(3), testNode(1), testNode(2)
	a.Name, b.Name, c.Name = "alpha.x.", "zulu.x.", "alpha.x."
	mustApply(t, m, &tailcfg.MapResponse{Node: selfNode(), Peers: []*tailcfg.Node{a, b, c}})
	if got := peerIDs(m); !slices.Equal(got, []tailcfg.NodeID{2, 3, 1}) {
		t.Fatalf("order = %v", got)
	}
}

func TestDuplicateKeysKeepIndexes(t *testing.T) {
	m := newTestMap(t)
	a, b := testNode(1), testNode(2)
	b.Key, b.DiscoKey, b.Addresses, b.Name = a.Key, a.DiscoKey, a.Addresses, a.Name
	mustApply(t, m, &tailcfg.MapResponse{PeersChanged: []*tailcfg.Node{a, b}})
	mustApply(t, m, &tailcfg.MapResponse{PeersRemoved: []tailcfg.NodeID{2}})
	if p, ok := peerByKey(m, a.Key); !ok || p.ID != 1 {
		t.Fatal("remaining peer lost its key entry")
	}
	if p, ok := m.PeerByIP(v4(1)); !ok || p.ID != 1 {
		t.Fatal("remaining peer lost its address entry")
	}
}

func TestPathsChanged(t *testing.T) {
	m := newTestMap(t, 1, 2)
	if c := mustApply(t, m, &tailcfg.MapResponse{OnlineChange: map[tailcfg.NodeID]bool{1: false}}); c.PathsChanged || len(c.PeersChanged) != 1 {
		t.Fatalf("online flip: %+v", c)
	}
	ep := []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:41641")}
	if c := mustApply(t, m, &tailcfg.MapResponse{PeersChangedPatch: []*tailcfg.PeerChange{{NodeID: 2, Endpoints: ep}}}); !c.PathsChanged {
		t.Fatalf("endpoint patch: %+v", c)
	}
	if c := mustApply(t, m, &tailcfg.MapResponse{PeersChangedPatch: []*tailcfg.PeerChange{{NodeID: 2, DERPRegion: 7}}}); !c.PathsChanged {
		t.Fatalf("home region patch: %+v", c)
	}
	if c := mustApply(t, m, &tailcfg.MapResponse{PeersChanged: []*tailcfg.Node{testNode(3)}}); !c.PathsChanged {
		t.Fatalf("new peer: %+v", c)
	}
	if c := mustApply(t, m, &tailcfg.MapResponse{PeersRemoved: []tailcfg.NodeID{3}}); !c.PathsChanged {
		t.Fatalf("removed peer: %+v", c)
	}
	n1 := testNode(1)
	n1.Name = "renamed.example.ts.net."
	n1.Online = new(true)
	if c := mustApply(t, m, &tailcfg.MapResponse{PeersChanged: []*tailcfg.Node{n1}}); c.PathsChanged || len(c.PeersChanged) != 1 {
		t.Fatalf("rename: %+v", c)
	}
}

func TestPathsUpdatedAndKeysGone(t *testing.T) {
	m := newTestMap(t, 1, 2, 3)
	ids := func(c Changes) []tailcfg.NodeID { return c.PathsUpdated }
	// Online state alone is not a path change.
	if c := mustApply(t, m, &tailcfg.MapResponse{OnlineChange: map[tailcfg.NodeID]bool{1: false}}); len(c.PathsUpdated)+len(c.KeysGone) != 0 {
		t.Fatalf("online flip: %+v", c)
	}
	// Two patches of one peer list it once.
	ep := []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:41641")}
	c := mustApply(t, m, &tailcfg.MapResponse{PeersChangedPatch: []*tailcfg.PeerChange{{NodeID: 2, Endpoints: ep}, {NodeID: 2, DERPRegion: 9}}})
	if !slices.Equal(ids(c), []tailcfg.NodeID{2}) || len(c.KeysGone) != 0 {
		t.Fatalf("endpoint patches: %+v", c)
	}
	// A new key: the old one is gone.
	newKey := nodeKey(100)
	c = mustApply(t, m, &tailcfg.MapResponse{PeersChangedPatch: []*tailcfg.PeerChange{{NodeID: 3, Key: &newKey}}})
	if !slices.Equal(ids(c), []tailcfg.NodeID{3}) || !slices.Equal(c.KeysGone, []key.NodePublic{nodeKey(3)}) {
		t.Fatalf("key patch: %+v", c)
	}
	// Removal and addition in one message.
	c = mustApply(t, m, &tailcfg.MapResponse{PeersRemoved: []tailcfg.NodeID{1}, PeersChanged: []*tailcfg.Node{testNode(4)}})
	if !slices.Equal(ids(c), []tailcfg.NodeID{4}) || !slices.Equal(c.KeysGone, []key.NodePublic{nodeKey(1)}) {
		t.Fatalf("remove and add: %+v", c)
	}
	// A full list names what it adds and what it drops.
	c = mustApply(t, m, &tailcfg.MapResponse{Peers: []*tailcfg.Node{testNode(2), testNode(5)}})
	gone := []key.NodePublic{newKey, nodeKey(4)}
	if !slices.Equal(ids(c), []tailcfg.NodeID{2, 5}) || len(c.KeysGone) != 2 || !slices.Contains(c.KeysGone, gone[0]) || !slices.Contains(c.KeysGone, gone[1]) {
		t.Fatalf("full list: %+v", c)
	}
}
