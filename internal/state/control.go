package state

import (
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"strings"
)

// ControlMismatchError reports an identity registered with another control
// server than the one the node is configured for.
type ControlMismatchError struct {
	Path       string // the identity file
	Stored     string // the control server the identity belongs to
	Configured string // the control server the node is configured for
}

func (e *ControlMismatchError) Error() string {
	return fmt.Sprintf("state: the identity in %s belongs to control server %s, not %s", e.Path, e.Stored, e.Configured)
}

// SameControlURL reports whether a and b name the same control server:
// equal up to the case of the scheme and host, the scheme's default port
// and trailing slashes.
func SameControlURL(a, b string) bool {
	return canonicalURL(a) == canonicalURL(b)
}

func canonicalURL(s string) string {
	u, err := url.Parse(strings.TrimSpace(s))
	if err != nil || u.Host == "" {
		return strings.TrimRight(s, "/")
	}
	u.Scheme = strings.ToLower(u.Scheme)
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if (u.Scheme == "https" && port == "443") || (u.Scheme == "http" && port == "80") {
		port = ""
	}
	u.Host = host
	if strings.Contains(host, ":") {
		u.Host = "[" + host + "]"
	}
	if port != "" {
		u.Host += ":" + port
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	return u.String()
}

// IdentityFor returns the identity for the control server controlURL,
// creating and saving one if there is none (created reports that).
//
// An identity saved without a control URL, by an older version, is taken
// to belong to controlURL, which is recorded in it; if that save fails
// (a full disk) it is only logged and tried again at the next start.
// An identity of another control server is an error, a
// *ControlMismatchError, unless fresh is true: then a new identity for
// controlURL replaces it and the old tailnet's peer cache is removed.
func (s *Store) IdentityFor(controlURL string, fresh bool) (id *Identity, created bool, err error) {
	id, err = s.LoadIdentity()
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return s.createIdentity(controlURL)
	case err != nil:
		return nil, false, err
	case id.ControlURL == "":
		id.ControlURL = controlURL
		if err := s.SaveIdentity(id); err != nil {
			s.logger.Warn("could not record the control server in the identity; will try again at the next start", "err", err)
		} else {
			s.logger.Info("recorded the control server in the identity", "path", s.path(IdentityFile), "control", controlURL)
		}
		return id, false, nil
	case SameControlURL(id.ControlURL, controlURL):
		return id, false, nil
	case !fresh:
		return nil, false, &ControlMismatchError{Path: s.path(IdentityFile), Stored: id.ControlURL, Configured: controlURL}
	}
	s.logger.Warn("replacing the identity of another control server with a new one",
		"path", s.path(IdentityFile), "old_control", id.ControlURL, "old_nodekey", id.NodeKey.NodePublic().ShortString(), "control", controlURL)
	if err := os.Remove(s.path(PeersFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, false, fmt.Errorf("state: removing the old tailnet's peer cache: %w", err)
	}
	return s.createIdentity(controlURL)
}

func (s *Store) createIdentity(controlURL string) (*Identity, bool, error) {
	id := NewIdentity()
	id.ControlURL = controlURL
	if err := s.SaveIdentity(id); err != nil {
		return nil, false, err
	}
	s.logger.Info("created new identity", "path", s.path(IdentityFile), "control", controlURL)
	return id, true, nil
}
