// Package attacktest attacks a microlink node in the offline lab while a
// real tailscaled pings it, and checks that the node stays within bounds
// and keeps answering.
//
// The victim is an ordinary microlink node in a process of its own (the
// victim program, built without the race detector), so that its
// goroutines, heap and open files are measured apart from everything
// else. The attacker is a node registered in the lab like any other, made
// of microlink's own protocol packages (control, DERP, disco, WireGuard),
// which the interop module may import since it lives inside microlink's
// module path; its home is a second DERP region served by a relay that
// misbehaves on demand. A real tailscaled in TUN mode pings the victim
// every 100 ms with the kernel's ping through each attack.
//
// Every attack asserts that the victim's goroutines, heap and open files
// stay within stated bounds, that the real peer's pings are answered
// (within a stated loss and latency), and that nothing reaches the
// loopback or far addresses the attacker names, except the few disco
// pings the protocol allows. The figures go to the test log, and to
// attack.jsonl in $MICROLINK_BENCH_OUT if set, from which scripts/bench.sh
// writes the "Under attack" section of docs/BENCHMARKS.md.
package attacktest

import (
	"os"
	"testing"

	"github.com/microlink-go/microlink/interop/lab"
)

func TestMain(m *testing.M) { os.Exit(lab.RunInNetns(m)) }
