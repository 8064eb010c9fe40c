package microlink

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/microlink-go/microlink/internal/key"
	"github.com/microlink-go/microlink/internal/tailcfg"
)

// TestWhoIs: a tailnet address, with or without a port, names its node,
// the node's user profile and its tags; the node's own addresses name it.
func TestWhoIs(t *testing.T) {
	n, _ := offlineNode(t)
	n.onMapResponse(&tailcfg.MapResponse{
		Node: &tailcfg.Node{ID: 1, StableID: "nSELF", Name: "me.example.ts.net.", User: 7, Key: n.ident.NodeKey.NodePublic(), Tags: []string{"tag:router"},
			Addresses: []netip.Prefix{netip.MustParsePrefix("100.64.0.1/32"), netip.MustParsePrefix("fd7a:115c:a1e0::1/128")}, MachineAuthorized: true},
		Peers: []*tailcfg.Node{
			{ID: 2, Name: "laptop.example.ts.net.", User: 8, Key: key.NewPrivate().NodePublic(), DiscoKey: key.NewPrivate().DiscoPublic(),
				Addresses: []netip.Prefix{netip.MustParsePrefix("100.64.0.2/32"), netip.MustParsePrefix("fd7a:115c:a1e0::2/128")},
				Hostinfo:  &tailcfg.Hostinfo{OS: "linux"}},
			{ID: 3, Name: "srv.example.ts.net.", User: 9, Key: key.NewPrivate().NodePublic(), Tags: []string{"tag:server"},
				Addresses: []netip.Prefix{netip.MustParsePrefix("100.64.0.3/32")}},
		},
		UserProfiles: []tailcfg.UserProfile{
			{ID: 7, LoginName: "router@example.com"},
			{ID: 8, LoginName: "alice@example.com", DisplayName: "Alice"},
		},
	})
	for _, tc := range []struct {
		addr, name, login string
		tags              []string
		self              bool
	}{
		{"100.64.0.2", "laptop", "alice@example.com", nil, false},
		{"[fd7a:115c:a1e0::2]:443", "laptop", "alice@example.com", nil, false},
		{"100.64.0.3:80", "srv", "", []string{"tag:server"}, false},
		{"::ffff:100.64.0.3", "srv", "", []string{"tag:server"}, false},
		{"100.64.0.1", "me", "router@example.com", []string{"tag:router"}, true},
	} {
		w, err := n.WhoIs(tc.addr)
		if err != nil {
			t.Errorf("%s: %v", tc.addr, err)
			continue
		}
		if w.Node.Name != tc.name || w.User.LoginName != tc.login || !slices.Equal(w.Tags, tc.tags) || w.Self != tc.self {
			t.Errorf("%s: %+v", tc.addr, w)
		}
	}
	if w, _ := n.WhoIs("100.64.0.2"); w.User.DisplayName != "Alice" || w.User.ID != 8 || w.Node.OS != "linux" || len(w.Node.Addresses) != 2 {
		t.Errorf("laptop: %+v", w)
	}
	if w, _ := n.WhoIs("100.64.0.1"); w.Node.StableID != "nSELF" || w.Node.UserID != 7 {
		t.Errorf("self: %+v", w.Node)
	}
	if w, _ := n.WhoIs("100.64.0.3"); w.User.ID != 9 {
		t.Errorf("unknown profile: %+v", w.User)
	}
	for _, bad := range []string{"100.64.0.99", "laptop", "", "1.2.3.4:x"} {
		if _, err := n.WhoIs(bad); err == nil {
			t.Errorf("WhoIs(%q) succeeded", bad)
		}
	}
}
