package router

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
)

// Forwarding switches of the kernel.
const (
	forward4 = "/proc/sys/net/ipv4/ip_forward"
	forward6 = "/proc/sys/net/ipv6/conf/all/forwarding"
)

// Kernel is the host's forwarding and SNAT for the node's advertised
// routes in TUN mode.
type Kernel struct {
	logger  *slog.Logger
	restore map[string][]byte // forwarding switches to put back, and their values
	snat    bool
}

// Cleanup removes the nftables tables a killed run left behind and
// reports whether there were any.
func Cleanup() (bool, error) { return delSNAT() }

// StartKernel turns on IP forwarding for the families of routes and, with
// snat, masquerades what the host forwards from the TUN device dev. It
// undoes its own changes if one fails.
func StartKernel(dev string, routes []netip.Prefix, snat bool, logger *slog.Logger) (*Kernel, error) {
	k := &Kernel{logger: logger, restore: map[string][]byte{}}
	var v4, v6 bool
	for _, r := range routes {
		if r.Addr().Is4() {
			v4 = true
		} else {
			v6 = true
		}
	}
	if v4 {
		if err := k.enable(forward4); err != nil {
			return nil, err
		}
	}
	if v6 {
		if err := k.enable(forward6); err != nil {
			k.Close()
			return nil, err
		}
	}
	if snat {
		if err := addSNAT(dev, !v6); err != nil {
			k.Close()
			return nil, err
		}
		k.snat = true
	}
	logger.Info("router: forwarding for advertised routes", "routes", routes, "snat", snat)
	return k, nil
}

// enable sets a forwarding switch to 1, remembering its old value.
func (k *Kernel) enable(path string) error {
	old, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("router: reading %s: %w", path, err)
	}
	if bytes.Equal(bytes.TrimSpace(old), []byte("1")) {
		return nil
	}
	if err := os.WriteFile(path, []byte("1"), 0o644); err != nil {
		return fmt.Errorf("router: turning on IP forwarding (%s): %w", path, err)
	}
	k.restore[path] = old
	return nil
}

// Close removes the SNAT rule and turns forwarding back off where Start
// turned it on.
func (k *Kernel) Close() error {
	var err error
	if k.snat {
		_, err = delSNAT()
	}
	for path, old := range k.restore {
		if werr := os.WriteFile(path, old, 0o644); werr != nil && err == nil {
			err = werr
		}
	}
	return err
}
