package microlink

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestIdentityBoundToControlURL: a state directory made with one control
// server refuses another with an error naming both; FreshIdentity
// replaces the identity and drops the old tailnet's peer cache.
func TestIdentityBoundToControlURL(t *testing.T) {
	dir := t.TempDir()
	const a, b = "http://127.0.0.1:1", "http://127.0.0.1:2"
	n1, err := New(Config{StateDir: dir, ControlURL: a, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "peers.json"), []byte(`{"Version":1,"Peers":[]}`), 0o600)

	_, err = New(Config{StateDir: dir, ControlURL: b, Logger: quietLogger()})
	var me *ControlMismatchError
	if !errors.As(err, &me) || me.StateURL != a || me.ControlURL != b || me.StateDir != dir {
		t.Fatalf("New with another control server: %v", err)
	}
	for _, want := range []string{a, b, dir, "FreshIdentity"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "peers.json")); err != nil {
		t.Fatalf("peer cache touched by a refused start: %v", err)
	}

	n2, err := New(Config{StateDir: dir, ControlURL: b, FreshIdentity: true, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if n2.Status().NodeKey == n1.Status().NodeKey {
		t.Fatal("FreshIdentity kept the node key")
	}
	if _, err := os.Stat(filepath.Join(dir, "peers.json")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the old tailnet's peer cache is still there: %v", err)
	}
	n3, err := New(Config{StateDir: dir, ControlURL: b + "/", FreshIdentity: true, Logger: quietLogger()})
	if err != nil || n3.Status().NodeKey != n2.Status().NodeKey {
		t.Fatalf("FreshIdentity with the same server made a new identity: %v", err)
	}
}
