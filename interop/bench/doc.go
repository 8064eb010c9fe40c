// Package bench holds the measurements behind docs/BENCHMARKS.md: the
// data plane next to wireguard-go and raw ChaCha20-Poly1305, and the
// whole node next to tailscaled. scripts/bench.sh runs them and
// benchreport turns their output into the document.
package bench
