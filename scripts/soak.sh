#!/usr/bin/env bash
# soak.sh DURATION [FLAGS]: runs a microlink node and a real tailscaled in
# the offline lab for DURATION (a Go duration: 90m, 2h) with a ping and a
# UDP echo every 10 s and a fault every 5 minutes in turn (control restart,
# DERP restart, path cut, address change), and prints a report: the node's
# goroutines, heap, RSS and open files each minute, whether they stay
# flat, the share of probes answered outside the outages, and each
# fault's recovery time. FLAGS go to interop/cmd/soak (-fault-every,
# -probe-every, -sample-every, -samples FILE, -verbose).
#
# Needs root (network namespaces, nftables, TUN). The report is also
# written to $SOAK_OUT (default soak-<date>.md in the current directory);
# copied to docs/soak.md, it becomes section 10 of docs/BENCHMARKS.md at the
# next scripts/bench.sh. Exit status: 0 if every goal was met, 3 if one was
# not, 1 on error.
set -euo pipefail
if [ $# -lt 1 ]; then
	echo "usage: scripts/soak.sh DURATION [flags of interop/cmd/soak]" >&2
	exit 2
fi
dur=$1
shift
out=${SOAK_OUT:-$(pwd)/soak-$(date +%Y%m%d-%H%M%S).md}
cd "$(dirname "$0")/../interop"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
if [ -z "${MICROLINK_TS_BIN:-}" ]; then
	MICROLINK_TS_BIN=$(bash build-tailscale.sh)
	export MICROLINK_TS_BIN
fi
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/soak" ./cmd/soak
go build -o "$bin/soaknode" ./cmd/soak/soaknode
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
echo "soak: $dur at $commit; report to $out" >&2
"$bin/soak" -duration "$dur" -out "$out" -label "$commit" "$@"
