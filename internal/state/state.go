// Package state keeps what a node must remember between runs in its state
// directory: its identity (machine and node keys), which is precious, and a
// cache of the last known peers and DERP map, which lets a restarted node
// reach known peers before the first netmap arrives.
//
// Files are written atomically (temporary file in the same directory,
// fsync, rename, fsync of the directory) with mode 0600, in a directory of
// mode 0700. An identity file that cannot be read or parsed is reported as
// an error naming it and is never replaced, so a damaged disk cannot
// silently turn a node into a new one. A damaged peer cache is ignored.
package state

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/microlink-go/microlink/internal/key"
)

// File names inside the state directory.
const (
	IdentityFile = "microlink.state"
	PeersFile    = "peers.json"
)

const identityVersion = 1

// Identity is the node's persistent identity.
type Identity struct {
	// MachineKey identifies the device to the control server.
	MachineKey key.Private
	// NodeKey is the WireGuard key the node is registered with.
	NodeKey key.Private
	// OldNodeKey is the previous node key while a rotation is registered;
	// zero otherwise.
	OldNodeKey key.Private
	// ControlURL is the control server the identity is registered with.
	ControlURL string
}

// NewIdentity returns an identity with fresh machine and node keys.
func NewIdentity() *Identity {
	return &Identity{MachineKey: key.NewPrivate(), NodeKey: key.NewPrivate()}
}

// identityFile is the on-disk form of an Identity.
type identityFile struct {
	Version    int
	MachineKey key.Private
	NodeKey    key.Private
	OldNodeKey key.Private `json:",omitzero"`
	ControlURL string      `json:",omitempty"`
}

// CorruptError reports a state file that exists but cannot be used.
type CorruptError struct {
	Path string
	Err  error
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("state: %s is unusable (left untouched; move it away to start with a new identity): %v", e.Path, e.Err)
}

func (e *CorruptError) Unwrap() error { return e.Err }

// Store is a state directory.
type Store struct {
	dir    string
	logger *slog.Logger
}

// Open prepares the state directory dir, creating it with mode 0700 if it
// is missing, and removes temporary files left by interrupted writes.
// A nil logger discards messages.
func Open(dir string, logger *slog.Logger) (*Store, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if dir == "" {
		return nil, errors.New("state: empty state directory")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	s := &Store{dir: dir, logger: logger}
	s.removeStaleTemps()
	return s, nil
}

// Dir returns the state directory.
func (s *Store) Dir() string { return s.dir }

func (s *Store) path(name string) string { return filepath.Join(s.dir, name) }

// LoadIdentity reads the identity. A missing file gives an error matching
// fs.ErrNotExist; an unreadable or malformed one a *CorruptError.
func (s *Store) LoadIdentity() (*Identity, error) {
	p := s.path(IdentityFile)
	data, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("state: %w", err)
	}
	if err != nil {
		return nil, &CorruptError{Path: p, Err: err}
	}
	id, err := parseIdentity(data)
	if err != nil {
		return nil, &CorruptError{Path: p, Err: err}
	}
	if fi, err := os.Stat(p); err == nil && fi.Mode().Perm()&0o077 != 0 {
		s.logger.Warn("state file is readable by others", "path", p, "mode", fi.Mode().Perm())
	}
	return id, nil
}

func parseIdentity(data []byte) (*Identity, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	var f identityFile
	if err := dec.Decode(&f); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("data after the JSON object")
	}
	switch {
	case f.Version != identityVersion:
		return nil, fmt.Errorf("unknown version %d", f.Version)
	case f.MachineKey.IsZero():
		return nil, errors.New("no machine key")
	case f.NodeKey.IsZero():
		return nil, errors.New("no node key")
	}
	return &Identity{MachineKey: f.MachineKey, NodeKey: f.NodeKey, OldNodeKey: f.OldNodeKey, ControlURL: f.ControlURL}, nil
}

// SaveIdentity writes id atomically. It refuses to replace an existing
// identity file that is unreadable or malformed.
func (s *Store) SaveIdentity(id *Identity) error {
	if id.MachineKey.IsZero() || id.NodeKey.IsZero() {
		return errors.New("state: identity without machine or node key")
	}
	if _, err := s.LoadIdentity(); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	data, err := json.MarshalIndent(identityFile{
		Version:    identityVersion,
		MachineKey: id.MachineKey,
		NodeKey:    id.NodeKey,
		OldNodeKey: id.OldNodeKey,
		ControlURL: id.ControlURL,
	}, "", "\t")
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	return writeFileAtomic(s.dir, IdentityFile, append(data, '\n'))
}

// Remove deletes the identity and the peer cache, as on logout. Missing
// files are not an error.
func (s *Store) Remove() error {
	var errs []error
	for _, name := range []string{IdentityFile, PeersFile} {
		if err := os.Remove(s.path(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("state: %w", err))
		}
	}
	if err := syncDir(s.dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func tempPrefix(name string) string { return "." + name + ".tmp-" }

// removeStaleTemps deletes temporary files of interrupted writes. They
// were never renamed into place, so the real files are intact.
func (s *Store) removeStaleTemps() {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		for _, name := range []string{IdentityFile, PeersFile} {
			if e.Type().IsRegular() && strings.HasPrefix(e.Name(), tempPrefix(name)) {
				if err := os.Remove(s.path(e.Name())); err == nil {
					s.logger.Debug("removed stale temporary file", "path", s.path(e.Name()))
				}
			}
		}
	}
}

// writeFileAtomic replaces dir/name with data so that a crash at any point
// leaves either the old or the new content.
func writeFileAtomic(dir, name string, data []byte) (err error) {
	f, err := os.CreateTemp(dir, tempPrefix(name)+"*")
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
			err = fmt.Errorf("state: writing %s: %w", filepath.Join(dir, name), err)
		}
	}()
	if err = f.Chmod(0o600); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("state: syncing %s: %w", dir, err)
	}
	return nil
}
