package osdns

import (
	"log/slog"
	"net/netip"
	"os"
	"strings"
)

// resolved configures systemd-resolved's settings for the TUN device
// with resolvectl.
type resolved struct {
	cmd, dev string
	logger   *slog.Logger
	applied  bool
}

func (r *resolved) set(c Config) error {
	args := []string{"dns", r.dev}
	for _, ns := range c.Nameservers {
		args = append(args, ns.String())
	}
	if err := run(r.cmd, args...); err != nil {
		return err
	}
	r.applied = true
	all := false
	args = append([]string{"domain", r.dev}, c.Search...)
	for _, m := range c.Match {
		all = all || m == "."
		if m == "." {
			args = append(args, "~.")
		} else {
			args = append(args, "~"+m)
		}
	}
	if err := run(r.cmd, args...); err != nil {
		return err
	}
	// The link is the default route for names only when it takes them
	// all; resolved before 240 has no such setting. MagicDNS does no
	// multicast names, DNSSEC or DNS over TLS: resolved must not expect
	// them of it.
	for _, a := range [][]string{
		{"default-route", r.dev, yesNo(all)},
		{"llmnr", r.dev, "no"},
		{"mdns", r.dev, "no"},
		{"dnssec", r.dev, "no"},
		{"dnsovertls", r.dev, "no"},
		{"flush-caches"},
	} {
		if err := run(r.cmd, a...); err != nil {
			r.logger.Debug("osdns: resolvectl", "err", err)
		}
	}
	return nil
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func (r *resolved) restore() (bool, error) {
	if !r.applied {
		return false, nil
	}
	return true, run(r.cmd, "revert", r.dev)
}

// hostResolvers is nil: resolv.conf still names resolved, which sends
// other names to the host's other links.
func (r *resolved) hostResolvers() []netip.AddrPort { return nil }

// managedByResolved reports whether the resolv.conf at path is
// systemd-resolved's: a link into /run/systemd/resolve, or a file whose
// leading comments name it.
func managedByResolved(path string) bool {
	if target, err := os.Readlink(path); err == nil {
		return strings.Contains(target, "/run/systemd/resolve/")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if line[0] != '#' {
			return false
		}
		if strings.Contains(line, "systemd-resolved") {
			return true
		}
	}
	return false
}
