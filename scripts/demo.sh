#!/usr/bin/env bash
# Starts an offline demo tailnet on this machine with real Tailscale code
# (control server, DERP relay, STUN, a real tailscaled), joins a microlink
# node to it from a Go program and runs "microlink up" as a router would,
# and prints what each side sees, then a summary of the steps.
#
# Run as root, it first installs what its steps use (iproute2 for network
# namespaces, iputils-ping, curl and getent for the steps of the daemon's
# TUN device, MagicDNS and proxies), as scripts/test.sh does. Otherwise the demo names
# the steps it skips, and why, before it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/deps.sh
deps_require_go demo.sh
# Not root: nothing is installed, and the demo says which steps that skips.
deps_install demo.sh ip:iproute2 ping:iputils-ping curl:curl getent:libc-bin || true

cd interop
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
if [ -z "${MICROLINK_TS_BIN:-}" ]; then
	MICROLINK_TS_BIN=$(bash build-tailscale.sh)
	export MICROLINK_TS_BIN
fi
echo "demo.sh: compiling the demo (a few minutes the first time, seconds later)" >&2
exec go run ./cmd/demo "$@"
