//go:build !linux

package router

import (
	"errors"
	"log/slog"
	"net/netip"
)

// ErrNoNftables is wrapped by the error of a system without nf_tables.
var ErrNoNftables = errors.New("router: no nftables here")

// Kernel is the host's forwarding for advertised routes; only on Linux.
type Kernel struct{}

// Cleanup has nothing to clean here.
func Cleanup() (bool, error) { return false, nil }

// StartKernel fails: TUN mode is Linux only.
func StartKernel(dev string, routes []netip.Prefix, snat bool, logger *slog.Logger) (*Kernel, error) {
	return nil, errors.New("router: kernel forwarding is supported only on Linux")
}

func (k *Kernel) Close() error { return nil }
