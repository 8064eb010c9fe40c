// Package derptest holds interoperability tests of microlink's DERP client
// (internal/derp) against Tailscale's DERP server (derp/derpserver) and
// reference client (derp/derphttp), all on loopback.
package derptest
