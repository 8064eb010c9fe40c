//go:build !linux

package tun

import (
	"log/slog"
	"net/netip"
)

// CheckAccess reports that TUN mode is not supported here.
func CheckAccess() error { return ErrUnsupported }

// Device is a TUN device; there are none here.
type Device struct{ Leftover bool }

// Open fails with ErrUnsupported.
func Open(name string, mtu int) (*Device, error) { return nil, ErrUnsupported }

func (d *Device) Name() string                      { return "" }
func (d *Device) Index() int                        { return 0 }
func (d *Device) ReadPackets(fn func([]byte)) error { return ErrUnsupported }
func (d *Device) Write(b []byte) (int, error)       { return 0, ErrUnsupported }
func (d *Device) Cork()                             {}
func (d *Device) Uncork()                           {}
func (d *Device) Close() error                      { return nil }

// Routing is the host configuration the node wants for its device.
type Routing struct{ Addrs, Routes, Bypass []netip.Prefix }

// Host is the node's routing state on the host; there is none here.
type Host struct{}

// NewHost fails with ErrUnsupported.
func NewHost(dev *Device, logger *slog.Logger) (*Host, error) { return nil, ErrUnsupported }

func (h *Host) Set(r Routing) error { return ErrUnsupported }
func (h *Host) Close() error        { return nil }

// Cleanup has nothing to clean here.
func Cleanup() (int, error) { return 0, nil }
