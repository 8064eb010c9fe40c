package osdns

import (
	"errors"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
)

// The host's resolver configuration, and where the CLI keeps its backup
// when the node has no state directory.
const (
	ResolvConf    = "/etc/resolv.conf"
	DefaultBackup = "/etc/resolv.pre-microlink.conf"
)

// BackupPath returns where the replaced resolv.conf is kept: in the
// node's state directory, or DefaultBackup without one.
func BackupPath(stateDir string) string {
	if stateDir == "" {
		return DefaultBackup
	}
	return filepath.Join(stateDir, "resolv.conf.orig")
}

// Config is what the host's resolver is told.
type Config struct {
	// Nameservers are the addresses of the resolver to use.
	Nameservers []netip.Addr
	// Search are the search domains, the tailnet's first, without
	// trailing dots.
	Search []string
	// Match are the names and suffixes (without trailing dots) whose
	// queries go to Nameservers where the host routes queries by name
	// (systemd-resolved); "." is every name. Where it cannot
	// (resolv.conf), every query goes to Nameservers.
	Match []string
}

func (c Config) equal(d Config) bool {
	return slices.Equal(c.Nameservers, d.Nameservers) && slices.Equal(c.Search, d.Search) && slices.Equal(c.Match, d.Match)
}

// Options configure a Manager.
type Options struct {
	// Device is the TUN device, whose DNS settings systemd-resolved
	// keeps.
	Device string
	// Backup is where the replaced resolv.conf is kept (BackupPath).
	Backup string
	Logger *slog.Logger
}

// configurator is one way of configuring the host's resolver.
type configurator interface {
	set(Config) error
	// restore puts back what set changed; restored says whether there
	// was anything to put back.
	restore() (restored bool, err error)
	// hostResolvers returns the servers the host used before set, or nil
	// when its configuration as it stands names them.
	hostResolvers() []netip.AddrPort
}

// Manager configures the host's resolver. Its methods are safe for
// concurrent use.
type Manager struct {
	logger *slog.Logger
	mode   string
	impl   configurator

	mu     sync.Mutex
	last   *Config
	closed bool
}

// New returns a Manager for the host's resolver: through
// systemd-resolved if it runs and owns /etc/resolv.conf and resolvectl is
// installed, otherwise by writing /etc/resolv.conf. It changes nothing
// until Set.
func New(o Options) *Manager {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if cmd := findCommand("resolvectl"); cmd != "" && managedByResolved(ResolvConf) && run(cmd, "status") == nil {
		return newManager(o.Logger, "systemd-resolved", &resolved{cmd: cmd, dev: o.Device, logger: o.Logger})
	}
	return newManager(o.Logger, "resolv.conf", newDirect(ResolvConf, o.Backup, o.Logger))
}

func newManager(logger *slog.Logger, mode string, impl configurator) *Manager {
	return &Manager{logger: logger, mode: mode, impl: impl}
}

// Mode says how the Manager configures the host: "systemd-resolved" or
// "resolv.conf".
func (m *Manager) Mode() string { return m.mode }

// Set points the host's resolver at c, unless it already is.
func (m *Manager) Set(c Config) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed || (m.last != nil && m.last.equal(c)) {
		return nil
	}
	if err := m.impl.set(c); err != nil {
		return err
	}
	m.last = &c
	m.logger.Info("osdns: host resolver set", "via", m.mode, "nameservers", c.Nameservers, "search", c.Search)
	return nil
}

// HostResolvers returns the servers the host named before Set pointed it
// elsewhere, for names outside the tailnet; nil when the host's own
// configuration still names them (systemd-resolved, or before Set).
func (m *Manager) HostResolvers() []netip.AddrPort {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.last == nil || m.closed {
		return nil
	}
	return m.impl.hostResolvers()
}

// Close puts the host's resolver configuration back as it was before
// Set.
func (m *Manager) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	restored, err := m.impl.restore()
	if restored {
		m.logger.Info("osdns: host resolver restored", "via", m.mode)
	}
	return err
}

// Recover puts back the resolv.conf that a run killed before it could
// restore it left in backup, if it is still microlink's. It reports
// whether it did.
func Recover(backup string, logger *slog.Logger) (bool, error) {
	if _, err := os.Lstat(backup); errors.Is(err, fs.ErrNotExist) {
		return false, nil // the common case, answered without more reading
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return newDirect(ResolvConf, backup, logger).restore()
}
