package state

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/microlink-go/microlink/internal/key"
	"github.com/microlink-go/microlink/internal/netmap"
	"github.com/microlink-go/microlink/internal/tailcfg"
)

const testControl = "https://control.example"

func openTemp(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "state"), nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestOpenCreatesPrivateDir(t *testing.T) {
	s := openTemp(t)
	fi, err := os.Stat(s.Dir())
	if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Fatalf("dir: %v %v", fi.Mode(), err)
	}
	if _, err := Open("", nil); err == nil {
		t.Fatal("empty dir accepted")
	}
}

func TestIdentityRoundTrip(t *testing.T) {
	s := openTemp(t)
	if _, err := s.LoadIdentity(); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	id, created, err := s.IdentityFor(testControl, false)
	if err != nil || !created || id.MachineKey.IsZero() || id.NodeKey.IsZero() || id.MachineKey.Equal(id.NodeKey) {
		t.Fatalf("create: %+v %v %v", id, created, err)
	}
	fi, err := os.Stat(filepath.Join(s.Dir(), IdentityFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v %v", fi.Mode(), err)
	}
	again, created, err := s.IdentityFor(testControl, false)
	if err != nil || created || *again != *id {
		t.Fatalf("reload: %+v %v %v", again, created, err)
	}
	// Rotation fields survive too.
	id.OldNodeKey, id.NodeKey, id.ControlURL = id.NodeKey, key.NewPrivate(), "https://ctl.example"
	if err := s.SaveIdentity(id); err != nil {
		t.Fatal(err)
	}
	s2, _ := Open(s.Dir(), nil)
	got, err := s2.LoadIdentity()
	if err != nil || *got != *id {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	data, _ := os.ReadFile(filepath.Join(s.Dir(), IdentityFile))
	if !bytes.Contains(data, []byte(id.MachineKey.String())) || !bytes.Contains(data, []byte(`"Version": 1`)) {
		t.Fatalf("file = %s", data)
	}
	if err := s.SaveIdentity(&Identity{MachineKey: key.NewPrivate()}); err == nil {
		t.Fatal("identity without node key saved")
	}
}

func TestCorruptIdentityIsKept(t *testing.T) {
	good := NewIdentity()
	for _, content := range []string{
		"",
		"{",
		"not json",
		`{"Version":1,"MachineKey":"privkey:zz","NodeKey":"privkey:00"}`,
		`{"Version":2,"MachineKey":"` + good.MachineKey.String() + `","NodeKey":"` + good.NodeKey.String() + `"}`,
		`{"Version":1,"NodeKey":"` + good.NodeKey.String() + `"}`,
		`{"Version":1,"MachineKey":"` + good.MachineKey.String() + `"}`,
		`{"Version":1,"MachineKey":"` + good.MachineKey.String() + `","NodeKey":"` + good.NodeKey.String() + `"} trailing`,
	} {
		s := openTemp(t)
		p := filepath.Join(s.Dir(), IdentityFile)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, _, err := s.IdentityFor(testControl, false)
		var ce *CorruptError
		if !errors.As(err, &ce) || ce.Path != p || !strings.Contains(err.Error(), p) {
			t.Errorf("%q: err = %v", content, err)
		}
		if err := s.SaveIdentity(NewIdentity()); !errors.As(err, &ce) {
			t.Errorf("%q: SaveIdentity over a corrupt file: %v", content, err)
		}
		if got, _ := os.ReadFile(p); string(got) != content {
			t.Errorf("%q: file changed to %q", content, got)
		}
	}
}

func TestUnreadableIdentity(t *testing.T) {
	// Tests may run as root, which reads mode 000 files; a directory in
	// the file's place is unreadable for everyone.
	s := openTemp(t)
	p := filepath.Join(s.Dir(), IdentityFile)
	if err := os.Mkdir(p, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(p, "keep"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err := s.IdentityFor(testControl, false)
	var ce *CorruptError
	if !errors.As(err, &ce) || ce.Path != p {
		t.Fatalf("err = %v", err)
	}
	if fi, err := os.Stat(p); err != nil || !fi.IsDir() {
		t.Fatal("directory replaced")
	}
	if err := s.SaveIdentity(NewIdentity()); err == nil {
		t.Fatal("saved over an unreadable identity")
	}
	if _, err := os.Stat(filepath.Join(p, "keep")); err != nil {
		t.Fatal("directory contents touched")
	}
}

func TestInterruptedWrite(t *testing.T) {
	s := openTemp(t)
	id, _, err := s.IdentityFor(testControl, false)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(s.Dir(), IdentityFile)
	before, _ := os.ReadFile(p)
	// A crash between writing the temporary file and renaming it leaves
	// the temporary file behind with partial content.
	stale := []string{
		filepath.Join(s.Dir(), tempPrefix(IdentityFile)+"123"),
		filepath.Join(s.Dir(), tempPrefix(PeersFile)+"456"),
	}
	for _, f := range stale {
		if err := os.WriteFile(f, []byte(`{"Version":1,"Machi`), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	other := filepath.Join(s.Dir(), "unrelated.tmp")
	os.WriteFile(other, []byte("x"), 0o600)

	s2, err := Open(s.Dir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s2.LoadIdentity()
	if err != nil || *got != *id {
		t.Fatalf("after crash: %+v %v", got, err)
	}
	if after, _ := os.ReadFile(p); !bytes.Equal(after, before) {
		t.Fatal("identity file changed")
	}
	for _, f := range stale {
		if _, err := os.Stat(f); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("stale temp %s not cleaned: %v", f, err)
		}
	}
	if _, err := os.Stat(other); err != nil {
		t.Error("unrelated file removed")
	}
	// A failed write leaves no temporary file and the old content.
	if err := writeFileAtomic(filepath.Join(s.Dir(), "missing-dir"), IdentityFile, []byte("x")); err == nil {
		t.Fatal("write into a missing directory succeeded")
	}
	ents, _ := os.ReadDir(s.Dir())
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary file left: %s", e.Name())
		}
	}
}

func TestRemove(t *testing.T) {
	s := openTemp(t)
	if _, _, err := s.IdentityFor(testControl, false); err != nil {
		t.Fatal(err)
	}
	if err := s.SavePeers(&PeerCache{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{IdentityFile, PeersFile} {
		if _, err := os.Stat(filepath.Join(s.Dir(), name)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s still exists", name)
		}
	}
	if err := s.Remove(); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
	if _, created, err := s.IdentityFor(testControl, false); err != nil || !created {
		t.Fatal("no new identity after Remove")
	}
}

func testPeers() []netmap.Peer {
	m := netmap.New(netmap.Options{})
	mk := func(id tailcfg.NodeID, allowed ...netip.Prefix) *tailcfg.Node {
		var k key.Public
		k[0], k[31] = byte(id), 1
		addrs := []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64, 0, byte(id)}), 32)}
		return &tailcfg.Node{ID: id, Name: "p.example.ts.net.", Key: key.NodePublic(k), DiscoKey: key.DiscoPublic(k),
			Addresses: addrs, AllowedIPs: append(addrs, allowed...), HomeDERP: 2,
			Endpoints: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:41641")}}
	}
	expired := mk(3)
	expired.Expired = true
	applyResponse(m, &tailcfg.MapResponse{Node: &tailcfg.Node{ID: 100}, Peers: []*tailcfg.Node{
		mk(1), mk(2, netip.MustParsePrefix("10.0.0.0/8")), expired}})
	return m.Peers()
}

// applyResponse applies resp to m as control's JSON, decoded as the node
// decodes it.
func applyResponse(m *netmap.Map, resp *tailcfg.MapResponse) {
	b, err := json.Marshal(resp)
	if err != nil {
		panic(err)
	}
	var d netmap.Decoder
	msg, err := d.Decode(bytes.NewReader(b))
	if err != nil {
		panic(err)
	}
	if _, err := m.Apply(msg); err != nil {
		panic(err)
	}
}

func TestPeerCacheRoundTrip(t *testing.T) {
	s := openTemp(t)
	if s.LoadPeers() != nil {
		t.Fatal("cache before any was saved")
	}
	dm := &tailcfg.DERPMap{Regions: map[int]*tailcfg.DERPRegion{2: {RegionID: 2, RegionCode: "x", Nodes: []*tailcfg.DERPNode{{Name: "2a", RegionID: 2, HostName: "d"}}}}}
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	c := NewPeerCache(testPeers(), dm, now)
	if len(c.Peers) != 2 {
		t.Fatalf("expired peer cached: %d", len(c.Peers))
	}
	if err := s.SavePeers(c); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(s.Dir(), PeersFile)); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
	got := s.LoadPeers()
	if got == nil || len(got.Peers) != 2 || !got.Saved.Equal(now) || got.DERPMap.Regions[2].Nodes[0].HostName != "d" {
		t.Fatalf("loaded %+v", got)
	}
	if got.Peers[0].AllowedIPs != nil || len(got.Peers[1].AllowedIPs) != 2 {
		t.Fatalf("allowed IPs: %v / %v", got.Peers[0].AllowedIPs, got.Peers[1].AllowedIPs)
	}
	// Back into a netmap, the peers are reachable.
	m := netmap.New(netmap.Options{})
	m.Restore(got.NetmapPeers(), got.DERPMap)
	if p, ok := m.PeerForDst(netip.MustParseAddr("10.9.9.9")); !ok || p.ID != 2 || p.HomeDERP != 2 || len(p.Endpoints) != 1 {
		t.Fatalf("restored router = %+v %v", p, ok)
	}
	if p, ok := m.PeerByIP(netip.MustParseAddr("100.64.0.1")); !ok || p.HasOwnAllowedIPs() {
		t.Fatalf("restored peer = %+v %v", p, ok)
	}
}

func TestCorruptPeerCacheIgnored(t *testing.T) {
	s := openTemp(t)
	var logBuf bytes.Buffer
	s.logger = slog.New(slog.NewTextHandler(&logBuf, nil))
	p := filepath.Join(s.Dir(), PeersFile)
	for _, content := range []string{"{", `{"Version":9}`, `[]`} {
		os.WriteFile(p, []byte(content), 0o600)
		logBuf.Reset()
		if c := s.LoadPeers(); c != nil {
			t.Errorf("%q loaded: %+v", content, c)
		}
		if !strings.Contains(logBuf.String(), p) {
			t.Errorf("%q: no warning naming the file: %s", content, logBuf.String())
		}
	}
	// Fresh data replaces a damaged cache.
	if err := s.SavePeers(&PeerCache{Peers: []CachedPeer{{ID: 1, Key: key.NewPrivate().NodePublic()}}}); err != nil {
		t.Fatal(err)
	}
	if c := s.LoadPeers(); c == nil || len(c.Peers) != 1 {
		t.Fatal("new cache not loaded")
	}
}

func FuzzLoad(f *testing.F) {
	id := NewIdentity()
	f.Add([]byte(`{"Version":1,"MachineKey":"` + id.MachineKey.String() + `","NodeKey":"` + id.NodeKey.String() + `"}`))
	f.Add([]byte(`{"Version":1,"Peers":[{"ID":1,"Key":"nodekey:` + strings.Repeat("1", 64) + `","Addresses":["100.64.0.1/32"]}],"DERPMap":{"Regions":{"1":null}}}`))
	f.Add([]byte("{"))
	f.Add([]byte{0xff, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		for _, name := range []string{IdentityFile, PeersFile} {
			if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		s, err := Open(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.LoadIdentity()
		if err == nil && (got.MachineKey.IsZero() || got.NodeKey.IsZero()) {
			t.Fatal("loaded an identity without keys")
		}
		if after, _ := os.ReadFile(filepath.Join(dir, IdentityFile)); !bytes.Equal(after, data) {
			t.Fatal("identity file modified by loading")
		}
		// An identity that does not load is never replaced, not even
		// when asked for a fresh one.
		if _, _, ferr := s.IdentityFor(testControl, true); err != nil {
			if ferr == nil {
				t.Fatal("IdentityFor accepted an identity LoadIdentity refused")
			}
			if after, _ := os.ReadFile(filepath.Join(dir, IdentityFile)); !bytes.Equal(after, data) {
				t.Fatal("unusable identity file replaced")
			}
		}
		if c := s.LoadPeers(); c != nil {
			m := netmap.New(netmap.Options{})
			m.Restore(c.NetmapPeers(), c.DERPMap)
			m.DERPMap()
		}
	})
}
