package netmap

import (
	"slices"
	"testing"
	"unsafe"

	"github.com/microlink-go/microlink/internal/tailcfg"
)

// TestTagsKeptCompactly: peers keep their ACL tags, with the tag strings
// shared between peers, and a change of tags is a change of the peer.
func TestTagsKeptCompactly(t *testing.T) {
	m := New(Options{})
	a, b := testNode(1), testNode(2)
	a.Tags = []string{"tag:server", "tag:prod"}
	b.Tags = []string{string([]byte("tag:server"))} // a distinct copy of the string
	self := selfNode()
	self.Tags = []string{"tag:router"}
	if _, err := applyResp(m, &tailcfg.MapResponse{Node: self, Peers: []*tailcfg.Node{a, b}}); err != nil {
		t.Fatal(err)
	}
	pa, _ := m.PeerByID(1)
	pb, _ := m.PeerByID(2)
	if !slices.Equal(pa.Tags, a.Tags) || !slices.Equal(pb.Tags, b.Tags) {
		t.Fatalf("tags %q %q", pa.Tags, pb.Tags)
	}
	if unsafe.StringData(pa.Tags[0]) != unsafe.StringData(pb.Tags[0]) {
		t.Error("equal tags are not shared between peers")
	}
	if s, _ := m.Self(); !slices.Equal(s.Tags, self.Tags) {
		t.Errorf("self tags %q", s.Tags)
	}
	b2 := testNode(2)
	ch, err := applyResp(m, &tailcfg.MapResponse{PeersChanged: []*tailcfg.Node{b2}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ch.PeersChanged, []tailcfg.NodeID{2}) || ch.PathsChanged {
		t.Fatalf("untagging: %+v", ch)
	}
	if pb, _ := m.PeerByID(2); pb.Tags != nil {
		t.Fatalf("tags after removal: %q", pb.Tags)
	}
}
