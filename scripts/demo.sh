#!/usr/bin/env bash
# Starts an offline demo tailnet on this machine with real Tailscale code
# (control server, DERP relay, STUN, a real tailscaled) and a microlink node,
# and prints what each side sees.
set -euo pipefail
cd "$(dirname "$0")/../interop"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
if [ -z "${MICROLINK_TS_BIN:-}" ]; then
	MICROLINK_TS_BIN=$(bash build-tailscale.sh)
	export MICROLINK_TS_BIN
fi
exec go run ./cmd/demo "$@"
