// Package bench holds the measurements behind docs/BENCHMARKS.md: the
// data plane next to wireguard-go and raw ChaCha20-Poly1305, and the
// whole node next to tailscaled (idle memory, start time, idle traffic
// per network namespace, UDP throughput), and TCP on emulated internet
// paths next to the kernel's and gVisor's (TestTCPImpaired, with tcpnode
// as the node under test). scripts/bench.sh runs them,
// measures binary sizes (sizefloor is the smallest Go client for
// comparison) and benchreport turns their output into the document.
//
// As root, the package runs in a network namespace of its own (see
// lab.RunInNetns); the idle traffic measurement needs that and is
// skipped otherwise.
package bench
