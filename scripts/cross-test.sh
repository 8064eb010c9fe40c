#!/usr/bin/env bash
# cross-test.sh: runs the unit tests of the protocol packages for arm64,
# arm (GOARM=7) and mipsle (GOMIPS=softfloat) under qemu user-mode
# emulation, with -short and a time budget per architecture.
#
#   scripts/cross-test.sh [-o RESULTS] [ARCH...]
#
# RESULTS, if given, receives one line per package and architecture:
#   ARCH PACKAGE STATUS SECONDS
# with STATUS one of ok, FAIL, timeout, nocompile (the package does not
# build on the host either, so it is skipped) or notests.
# CROSS_BUDGET (seconds per architecture, default 300) bounds the run. It
# covers compiling the test binaries (from a cold cache in a fresh CI run)
# and running them emulated, about 90 s per architecture on 2 idle cores;
# the default leaves room for a loaded machine, since it is a bound on a
# stuck run and not a measurement.
# The last line is a plain summary: "cross-test: N passed, N failed, N skipped".
set -uo pipefail
cd "$(dirname "$0")/.."
export GOFLAGS="${GOFLAGS:--buildvcs=false}"

results=
if [ "${1:-}" = "-o" ]; then
	results=$2
	shift 2
fi
arches=("$@")
[ ${#arches[@]} -gt 0 ] || arches=(arm64 arm mipsle)
budget=${CROSS_BUDGET:-300}

candidates=(key tailcfg blake2s noise hpack h1 h2 ts2021 zstd control wireguard derp disco stun magicsock packet netmap state tunnel tcp dns)
pkgs=()
for p in "${candidates[@]}"; do
	if [ -d "internal/$p" ] && ls "internal/$p"/*.go >/dev/null 2>&1; then
		pkgs+=("./internal/$p")
	else
		echo "cross-test: internal/$p does not exist; skipped"
	fi
done

qemu_for() {
	case $1 in
	arm64) echo qemu-aarch64-static ;;
	arm) echo qemu-arm-static ;;
	mipsle) echo qemu-mipsel-static ;;
	*) return 1 ;;
	esac
}

. scripts/lib/deps.sh
qemus=()
for a in "${arches[@]}"; do
	q=$(qemu_for "$a") || { echo "cross-test: unknown architecture $a" >&2; exit 2; }
	qemus+=("$q:qemu-user-static")
done
if ! deps_install cross-test "${qemus[@]}"; then
	[ "$(id -u)" = 0 ] || echo "cross-test: $DEPS_MISSING is missing and we are not root to install it" >&2
	exit 2
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
[ -z "$results" ] || : >"$results"

# Packages that fail to build for the host are work in progress, not an
# architecture problem: find them once.
declare -A hostbroken=()
for p in "${pkgs[@]}"; do
	if ! go test -count=1 -run '^$' "$p" >"$tmp/host.log" 2>&1; then
		if grep -q 'build failed\|setup failed' "$tmp/host.log"; then
			hostbroken[$p]=1
			echo "cross-test: $p does not compile on the host; skipped:"
			sed 's/^/    /' "$tmp/host.log" | head -5
		fi
	fi
done

passed=0 failed=0 skipped=0
record() { # arch pkg status seconds
	[ -z "$results" ] || echo "$1 $2 $3 $4" >>"$results"
	case $3 in
	ok) passed=$((passed + 1)) ;;
	nocompile | notests) skipped=$((skipped + 1)) ;;
	*) failed=$((failed + 1)) ;;
	esac
}

for a in "${arches[@]}"; do
	q=$(qemu_for "$a")
	env=(GOOS=linux GOARCH="$a")
	[ "$a" = arm ] && env+=(GOARM=7)
	[ "$a" = mipsle ] && env+=(GOMIPS=softfloat)
	run=()
	for p in "${pkgs[@]}"; do
		if [ -n "${hostbroken[$p]:-}" ]; then
			record "$a" "${p#./}" nocompile 0
		else
			run+=("$p")
		fi
	done
	[ ${#run[@]} -gt 0 ] || continue
	echo "cross-test: $a (${env[*]}) via $q, budget ${budget}s: ${run[*]}"
	start=$(date +%s)
	# Each test binary gets the whole budget as its own timeout; the outer
	# timeout ends the architecture's run if the budget is spent.
	timeout --kill-after=10 "$budget" env "${env[@]}" \
		go test -count=1 -short -timeout "${budget}s" -exec "$q" "${run[@]}" >"$tmp/$a.log" 2>&1
	rc=$?
	elapsed=$(($(date +%s) - start))
	sed 's/^/    /' "$tmp/$a.log" | grep -v '^    === \|^    --- PASS\|^    PASS$' | tail -40
	for p in "${run[@]}"; do
		ip="github.com/microlink-go/microlink/${p#./}"
		line=$(grep -E "^(ok|FAIL|\?)[[:space:]]+$ip([[:space:]]|$)" "$tmp/$a.log" | tail -1)
		secs=$(echo "$line" | grep -oE '[0-9.]+s$' | tr -d s)
		case $line in
		ok*) record "$a" "${p#./}" ok "${secs:-0}" ;;
		\?*) record "$a" "${p#./}" notests 0 ;;
		FAIL*) record "$a" "${p#./}" FAIL "${secs:-0}" ;;
		*)
			if [ $rc = 124 ] || [ $rc = 137 ]; then
				record "$a" "${p#./}" timeout "$elapsed"
			else
				record "$a" "${p#./}" FAIL 0
			fi
			;;
		esac
	done
	echo "cross-test: $a done in ${elapsed}s (exit $rc)"
done

echo "cross-test: $passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]
