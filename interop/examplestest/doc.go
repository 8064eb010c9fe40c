// Package examplestest runs microlink's example programs, built as
// ordinary binaries, against an offline lab of real Tailscale code and
// checks what they print. The offlinelab command starts the same lab for
// trying the examples by hand.
package examplestest
