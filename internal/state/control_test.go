package state

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/microlink-go/microlink/internal/key"
)

func TestSameControlURL(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		same bool
	}{
		{"https://controlplane.tailscale.com", "https://controlplane.tailscale.com", true},
		{"https://controlplane.tailscale.com", "https://controlplane.tailscale.com/", true},
		{"https://ControlPlane.Tailscale.com", "HTTPS://controlplane.tailscale.com", true},
		{"https://hs.example:443", "https://hs.example", true},
		{"http://198.18.0.1:80", "http://198.18.0.1", true},
		{"http://[2001:db8::1]:80/", "http://[2001:DB8::1]", true},
		{"https://hs.example/base/", "https://hs.example/base", true},
		{"https://hs.example", "http://hs.example", false},
		{"https://hs.example:8443", "https://hs.example", false},
		{"http://198.18.0.1:8080", "http://198.18.0.1:8081", false},
		{"https://hs.example/a", "https://hs.example/b", false},
		{"https://controlplane.tailscale.com", "https://hs.example", false},
	} {
		if got := SameControlURL(tc.a, tc.b); got != tc.same {
			t.Errorf("SameControlURL(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.same)
		}
	}
}

// TestIdentityBoundToControl: an identity is the control server's it was
// made for. Another server is refused with an error naming both, and the
// state is left as it was; asked for a fresh identity, the store makes a
// new one and drops the old tailnet's peer cache.
func TestIdentityBoundToControl(t *testing.T) {
	const a, b = "https://control-a.example", "http://198.18.0.1:8080"
	s := openTemp(t)
	id, created, err := s.IdentityFor(a, false)
	if err != nil || !created || id.ControlURL != a {
		t.Fatalf("create: %+v %v %v", id, created, err)
	}
	again, created, err := s.IdentityFor("https://CONTROL-A.example/", false)
	if err != nil || created || *again != *id {
		t.Fatalf("same server, written differently: %+v %v %v", again, created, err)
	}
	if err := s.SavePeers(NewPeerCache(testPeers(), nil, time.Now())); err != nil {
		t.Fatal(err)
	}
	idPath := filepath.Join(s.Dir(), IdentityFile)
	idBefore, _ := os.ReadFile(idPath)
	peersBefore, _ := os.ReadFile(filepath.Join(s.Dir(), PeersFile))

	_, _, err = s.IdentityFor(b, false)
	var me *ControlMismatchError
	if !errors.As(err, &me) || me.Stored != a || me.Configured != b || me.Path != idPath {
		t.Fatalf("another server: %v (%#v)", err, me)
	}
	for _, want := range []string{a, b, idPath} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	if now, _ := os.ReadFile(idPath); !bytes.Equal(now, idBefore) {
		t.Fatal("identity file changed by a refused start")
	}
	if now, _ := os.ReadFile(filepath.Join(s.Dir(), PeersFile)); !bytes.Equal(now, peersBefore) {
		t.Fatal("peer cache changed by a refused start")
	}

	fresh, created, err := s.IdentityFor(b, true)
	if err != nil || !created || fresh.ControlURL != b {
		t.Fatalf("fresh identity: %+v %v %v", fresh, created, err)
	}
	if fresh.MachineKey.Equal(id.MachineKey) || fresh.NodeKey.Equal(id.NodeKey) {
		t.Fatal("the fresh identity reuses the old keys")
	}
	if c := s.LoadPeers(); c != nil {
		t.Fatalf("the old tailnet's peer cache survived: %d peers", len(c.Peers))
	}
	loaded, err := s.LoadIdentity()
	if err != nil || *loaded != *fresh {
		t.Fatalf("fresh identity not saved: %+v %v", loaded, err)
	}
	// Asking for a fresh identity again changes nothing: it is fresh only
	// when the server changes.
	if again, created, err := s.IdentityFor(b, true); err != nil || created || *again != *fresh {
		t.Fatalf("fresh identity asked again: %+v %v %v", again, created, err)
	}
	if _, _, err := s.IdentityFor(a, false); !errors.As(err, &me) || me.Stored != b {
		t.Fatalf("back to the first server: %v", err)
	}
}

// TestIdentityWithoutControlURL: a state file written before identities
// recorded their control server still loads, and from then on belongs to
// the configured server.
func TestIdentityWithoutControlURL(t *testing.T) {
	s := openTemp(t)
	machine, node := key.NewPrivate(), key.NewPrivate()
	old := `{
	"Version": 1,
	"MachineKey": "` + machine.String() + `",
	"NodeKey": "` + node.String() + `"
}
`
	if err := os.WriteFile(filepath.Join(s.Dir(), IdentityFile), []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	const url = "https://hs.example"
	id, created, err := s.IdentityFor(url, false)
	if err != nil || created || !id.MachineKey.Equal(machine) || !id.NodeKey.Equal(node) || id.ControlURL != url {
		t.Fatalf("old state file: %+v %v %v", id, created, err)
	}
	data, _ := os.ReadFile(filepath.Join(s.Dir(), IdentityFile))
	if !bytes.Contains(data, []byte(`"ControlURL": "`+url+`"`)) {
		t.Fatalf("control URL not recorded:\n%s", data)
	}
	if _, _, err := s.IdentityFor("https://other.example", false); err == nil {
		t.Fatal("the adopted identity accepted another server")
	}
}
