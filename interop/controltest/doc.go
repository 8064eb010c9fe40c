// Package controltest holds interoperability tests of microlink's control
// client (internal/noise, internal/ts2021, internal/control) against
// Tailscale's own control-plane code.
package controltest
