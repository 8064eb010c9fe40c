#!/usr/bin/env bash
# Runs every test of microlink on a fresh machine: installs what is missing,
# builds the real Tailscale binaries once, then runs the product's unit tests
# (race detector on), the protocol packages' tests under qemu for arm64, arm
# and mipsle, every fuzz target for a short while, the interop tests against
# real Tailscale code, and a smoke run of the benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

log() { printf '\n=== %s\n' "$*"; }

# gotest runs go test -v, keeps the full output in $logdir and shows the
# package lines and failures; the per-test results are counted at the end.
logdir=$(mktemp -d)
gotest() {
	local name=$1 rc
	shift
	set +e
	go test -v "$@" 2>&1 | tee "$logdir/$name.log" |
		grep -a --line-buffered -E '^(ok|FAIL|panic:)|^\s*--- FAIL'
	rc=${PIPESTATUS[0]}
	set -e
	if [ "$rc" != 0 ]; then
		echo "--- output of the failures (full log: $logdir/$name.log):"
		grep -a -B 150 -A 20 -E -- '--- FAIL|^panic:' "$logdir/$name.log" | tail -400
	fi
	return "$rc"
}

# System packages the interop lab uses: ip (network namespaces), ping, nft,
# setpriv (daemons run as an ordinary user); curl, python3 and a headless
# Chromium drive the daemon's proxies, a status script and its status page
# (interop/daemontest).
# (cross-test.sh installs qemu-user-static the same way.)
. scripts/lib/deps.sh
deps_require_go test.sh
if ! deps_install test.sh ip:iproute2 ping:iputils-ping nft:nftables setpriv:util-linux curl:curl python3:python3 \
	chromium:chromium chromedriver:chromium-driver; then
	[ "$(id -u)" != 0 ] || exit 1
	echo "test.sh: missing $DEPS_MISSING and not root: network-namespace tests will be limited" >&2
fi

export GOFLAGS="${GOFLAGS:--buildvcs=false}"
go version

log "checks: gofmt, go vet"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then echo "gofmt needed:"; echo "$unformatted"; exit 1; fi
go vet ./...
GOARCH=arm GOARM=7 go vet ./...    # 32-bit targets: routers and Pi Zeros
GOARCH=mipsle GOMIPS=softfloat go build -o /dev/null ./cmd/microlink
(cd interop && go vet ./...)
go mod tidy -diff || { echo "go.mod or go.sum is not tidy: run go mod tidy"; exit 1; }
(cd interop && go mod tidy -diff) || { echo "interop/go.mod or go.sum is not tidy: run go mod tidy in interop"; exit 1; }
if grep -qE '^\s*(tailscale\.com|gvisor\.dev)' go.mod; then
	echo "product go.mod must not require tailscale.com or gVisor"; exit 1
fi

log "binary size budget (.ci/size-budget)"
./scripts/size-check.sh

log "building tailscaled and tailscale, and headscale (once per run)"
MICROLINK_TS_BIN=$(bash interop/build-tailscale.sh)
MICROLINK_HEADSCALE_BIN=$(bash interop/build-headscale.sh)
export MICROLINK_TS_BIN MICROLINK_HEADSCALE_BIN

log "unit tests (race)"
gotest unit -race -count=1 ./...

log "allocation tests without the race detector (it changes allocations)"
gotest allocs -count=1 -run 'Alloc' ./...

log "cross-architecture unit tests under qemu: arm64, arm (GOARM=7), mipsle (softfloat)"
./scripts/cross-test.sh

log "fuzz targets, a short run each (scripts/fuzz.sh 60s for a longer one)"
./scripts/fuzz.sh "${MICROLINK_FUZZTIME:-5000x}"

log "interop tests against tailscale.com v1.102.5 and Headscale v0.27.1 (race)"
(cd interop && gotest interop -race -count=1 -timeout 20m ./...)

log "benchmark smoke run (scripts/bench.sh for the full measurements)"
./scripts/bench.sh --quick

passed=$(cat "$logdir"/*.log | grep -cE '^\s*--- PASS' || true)
skipped=$(cat "$logdir"/*.log | grep -cE '^\s*--- SKIP' || true)
log "all tests passed"
echo "tests: $passed passed, 0 failed, $skipped skipped"
