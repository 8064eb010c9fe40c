#!/usr/bin/env bash
# bench.sh: measures microlink next to tailscaled and wireguard-go and
# writes docs/BENCHMARKS.md.
#
#   scripts/bench.sh           full run (tens of minutes on 2 cores; builds
#                              tailscaled three ways once, then caches them)
#   scripts/bench.sh --quick   smoke run for CI: tiny iteration counts, only
#                              cached tailscaled builds, report written to the
#                              results directory instead of docs/
#
# Options: --results DIR keeps the raw results in DIR (default: a temporary
# directory, removed at the end unless --keep). Environment: BENCH_QUIET_LOAD
# (default 1.0) and BENCH_QUIET_WAIT (seconds, default 300): a full run first
# waits up to BENCH_QUIET_WAIT for the 1-minute load average to drop below
# BENCH_QUIET_LOAD, then runs anyway and records the load in the report.
# Idle traffic is measured per node in network namespaces: it needs root
# (and iproute2, nftables for its split by kind); otherwise the report says
# it was not measured.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
export GOFLAGS="${GOFLAGS:--buildvcs=false}"

mode=full
results=
keep=
while [ $# -gt 0 ]; do
	case $1 in
	--quick) mode=quick ;;
	--results) results=$2; keep=1; shift ;;
	--keep) keep=1 ;;
	-h | --help) sed -n '2,18p' "$0"; exit 0 ;;
	*) echo "bench.sh: unknown argument $1" >&2; exit 2 ;;
	esac
	shift
done
if [ -z "$results" ]; then
	results=$(mktemp -d /tmp/microlink-bench.XXXXXX)
fi
mkdir -p "$results"
[ -n "$keep" ] || [ "$mode" = quick ] || trap 'rm -rf "$results"' EXIT
bin=$results/bin
mkdir -p "$bin"
cache=${MICROLINK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/microlink-interop}/bench
mkdir -p "$cache"

status=0
log() { printf '\n=== %s\n' "$*" >&2; }
fail() { echo "bench.sh: $*" >&2; status=1; }
# rec SECTION DIR COMMAND: records the command for the report and runs it
# with bash in DIR (relative to the repository root).
rec() {
	local sec=$1 dir=$2 cmd=$3
	if [ "$dir" = . ]; then
		printf '%s\t%s\n' "$sec" "$cmd" >>"$results/commands.txt"
	else
		printf '%s\t(cd %s && %s)\n' "$sec" "$dir" "$cmd" >>"$results/commands.txt"
	fi
	(cd "$root/$dir" && bash -c "$cmd")
}
load1() { cut -d' ' -f1 /proc/loadavg; }

: >"$results/commands.txt"

# --- machine -----------------------------------------------------------------
if [ "$mode" = full ]; then
	want=${BENCH_QUIET_LOAD:-1.0}
	deadline=$(($(date +%s) + ${BENCH_QUIET_WAIT:-300}))
	while awk -v l="$(load1)" -v w="$want" 'BEGIN{exit !(l >= w)}' && [ "$(date +%s)" -lt "$deadline" ]; do
		echo "bench.sh: load $(load1) >= $want, waiting for a quieter machine" >&2
		sleep 20
	done
fi
{
	echo "MODE=$mode"
	[ "$mode" = quick ] && echo "MODE_FLAG= --quick" || echo "MODE_FLAG="
	echo "DATE=$(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "NPROC=$(nproc)"
	echo "CPU=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')$(grep -m1 '^flags' /proc/cpuinfo | grep -qw avx2 && echo ' (AVX2)')"
	echo "MEMORY=$(awk '/^MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
	echo "GO=$(go version | cut -d' ' -f3-)"
	echo "KERNEL=$(uname -sr)"
	echo "COMMIT=$(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD -- . 2>/dev/null || echo ' (with uncommitted changes in the tree)')"
	echo "LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)"
} >"$results/meta.env"
cat "$results/meta.env" >&2

# --- 1. binary size ----------------------------------------------------------
log "binary size"
: >"$results/sizes.tsv"
size_of() { stat -c %s "$1"; }
for target in amd64 arm64 arm mipsle; do
	env=(CGO_ENABLED=0 GOOS=linux GOARCH=$target)
	label=linux/$target
	[ "$target" = arm ] && env+=(GOARM=7) && label="linux/arm (GOARM=7)"
	[ "$target" = mipsle ] && env+=(GOMIPS=softfloat) && label="linux/mipsle (GOMIPS=softfloat)"
	out=$bin/microlink-$target
	if rec size . "env ${env[*]} go build -trimpath -ldflags='-s -w' -o $out ./cmd/microlink" 2>"$results/build-$target.log"; then
		printf 'microlink\t%s\t%s\t\n' "$label" "$(size_of "$out")" >>"$results/sizes.tsv"
	else
		fail "go build ./cmd/microlink for $label failed:"
		sed 's/^/    /' "$results/build-$target.log" | head -20 >&2
		printf 'microlink\t%s\t-\tgo build ./cmd/microlink failed: %s\n' "$label" \
			"$(grep -m1 -v '^#' "$results/build-$target.log" | tr '\t|' '  ')" >>"$results/sizes.tsv"
	fi
done

# What the goal is up against: microlink without the CLI (a library-only
# program), and the size floor of any Go client (crypto/tls, encoding/json,
# log/slog and net only), without and with net/http's client.
floor() { # NAME DIR TAGS PACKAGE
	local out=$bin/floor-$(echo "$1" | tr -c 'a-zA-Z0-9\n' -)
	if rec size "$2" "env CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build ${3:+-tags=$3 }-trimpath -ldflags='-s -w' -o $out $4" 2>"$results/build-floor.log"; then
		printf '%s\tlinux/amd64\t%s\t\n' "$1" "$(size_of "$out")" >>"$results/sizes.tsv"
	else
		fail "go build $4 failed"
		sed 's/^/    /' "$results/build-floor.log" | head -20 >&2
	fi
}
floor "microlink library only (examples/basic_connect)" . "" ./examples/basic_connect
floor "size floor (tls, json, slog, net)" interop "" ./bench/sizefloor
floor "size floor + net/http client" interop withhttp ./bench/sizefloor

# The amd64 CLI compressed as it would sit in a router's squashfs.
if command -v xz >/dev/null 2>&1 && [ -s "$bin/microlink-amd64" ]; then
	xz -9e -c "$bin/microlink-amd64" | wc -c >"$results/xz.txt"
fi

# The same amd64 build without -s -w, for the report's breakdown by package.
env CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build -trimpath -o "$bin/microlink-amd64.unstripped" ./cmd/microlink 2>/dev/null || true

tsversion=$(cd interop && go list -m -f '{{.Version}}' tailscale.com 2>/dev/null)
if [ -z "$tsversion" ]; then
	fail "cannot resolve the tailscale.com version of the interop module"
else
	for variant in default extra-small min; do
		case $variant in
		default) tagcmd= ;;
		extra-small) tagcmd="go run tailscale.com/cmd/featuretags --min --add=osrouter" ;;
		min) tagcmd="go run tailscale.com/cmd/featuretags --min" ;;
		esac
		cached=$cache/tailscaled-$tsversion-$variant-linux-amd64
		if [ ! -s "$cached" ]; then
			if [ "$mode" = quick ]; then
				echo "bench.sh: quick mode: tailscaled $variant not cached, not built" >&2
				continue
			fi
			tags=
			if [ -n "$tagcmd" ]; then
				printf 'size\t(cd interop && export TAGS=$(%s))\n' "$tagcmd" >>"$results/commands.txt"
				tags=$(cd interop && GOOS= GOARCH= $tagcmd) || { fail "featuretags failed"; continue; }
				export TAGS=$tags
			fi
			echo "bench.sh: building tailscaled $tsversion ($variant)" >&2
			if ! rec size interop "CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build ${tags:+-tags=\$TAGS }-trimpath -ldflags='-s -w' -o $cached.tmp tailscale.com/cmd/tailscaled" \
				2>"$results/build-tailscaled-$variant.log"; then
				fail "building tailscaled $variant failed"
				sed 's/^/    /' "$results/build-tailscaled-$variant.log" | head -20 >&2
				continue
			fi
			mv "$cached.tmp" "$cached"
		else
			printf 'size\t(cached) tailscaled %s %s: %s\n' "$tsversion" "$variant" \
				"$([ -n "$tagcmd" ] && echo "go build -tags=\$($tagcmd)" || echo "go build") -trimpath -ldflags='-s -w' tailscale.com/cmd/tailscaled" >>"$results/commands.txt"
		fi
		printf 'tailscaled %s\tlinux/amd64\t%s\t%s\n' "$variant" "$(size_of "$cached")" "$tsversion" >>"$results/sizes.tsv"
	done
fi
cat "$results/sizes.tsv" >&2

# --- 2. data plane -----------------------------------------------------------
log "data plane"
if [ "$mode" = quick ]; then
	benchflags="-benchtime=2000x -count=1"
else
	benchflags="-benchtime=2s -count=3"
fi
rec dataplane interop "go test -run '^\$' -bench 'BenchmarkChaCha20Poly1305|BenchmarkMicrolink|BenchmarkWireGuardGo' -benchmem $benchflags ./bench" \
	>"$results/dataplane.txt" 2>&1 || { fail "data plane benchmarks failed"; tail -20 "$results/dataplane.txt" >&2; }
grep -E '^Benchmark' "$results/dataplane.txt" >&2
if [ "$mode" = full ]; then
	# CPU profiles of both whole paths, for the explanation of the figures.
	: >"$results/dataplane.notes"
	for prof in 'BenchmarkMicrolink/e2e$' 'BenchmarkWireGuardGo/e2e-batch=32$'; do
		name=$(echo "$prof" | tr -dc 'a-zA-Z0-9=-')
		rec dataplane interop "go test -run '^\$' -bench '$prof' -benchtime=2s -cpuprofile $results/$name.prof -o $results/bench.test ./bench >/dev/null && go tool pprof -top -nodecount=12 $results/bench.test $results/$name.prof" \
			>"$results/$name.top" 2>/dev/null || continue
		{
			echo "CPU profile of \`${prof%\$}\` (top 12 by flat time):"
			echo
			echo '```'
			grep -A12 '^ *flat' "$results/$name.top"
			echo '```'
			echo
		} >>"$results/dataplane.notes"
	done
fi

# --- 3. netmap scale ---------------------------------------------------------
log "netmap scale"
if [ "$mode" = quick ]; then
	sizes='10000'
else
	sizes='10000|50000'
fi
rec netmap . "go test -run '^\$' -bench 'BenchmarkNetmapScale/peers=($sizes)\$' -benchtime=1x -count=1 ./internal/control" \
	>"$results/netmap.txt" 2>&1 || { fail "netmap benchmark failed"; tail -20 "$results/netmap.txt" >&2; }
grep -E '^Benchmark' "$results/netmap.txt" >&2

# --- 4. cross-architecture ---------------------------------------------------
log "cross-architecture tests"
if [ "$mode" = quick ]; then
	rec cross . "CROSS_BUDGET=150 scripts/cross-test.sh -o $results/cross.txt arm64" >"$results/cross.log" 2>&1
else
	rec cross . "scripts/cross-test.sh -o $results/cross.txt" >"$results/cross.log" 2>&1
fi
rc=$?
grep -E '^cross-test:|FAIL|\.go:[0-9]+' "$results/cross.log" | head -40 >&2
grep -E '^    .*\.go:[0-9]+:|^    --- FAIL|^cross-test: .* does not' "$results/cross.log" | sed 's/^    //' | sort -u | head -20 >"$results/cross.notes"
[ $rc = 0 ] || echo "bench.sh: cross-architecture tests found failures (reported, not fatal)" >&2

# --- 5. the whole node -------------------------------------------------------
log "node next to tailscaled"
if ! go build -o /dev/null . 2>"$results/node-build.log"; then
	{
		echo "The root package (microlink.New/Start/ListenUDP) does not build at this commit:"
		echo
		echo '```'
		head -10 "$results/node-build.log"
		echo '```'
	} >"$results/node.skip"
elif [ ! -x "$bin/microlink-amd64" ]; then
	echo "cmd/microlink does not build at this commit (see the binary size section), and the node measurements run it as a process." >"$results/node.skip"
elif ! grep -qs 'func BenchmarkNode' interop/bench/*_test.go; then
	echo "The node measurements are not written yet." >"$results/node.skip"
else
	tsbin=$(bash interop/build-tailscale.sh 2>>"$results/node.log") || tsbin=
	if [ "$mode" = quick ]; then
		nodeflags="-short" nodebench='BenchmarkNodeIdle/peers=1$|BenchmarkNodeTraffic'
	else
		nodeflags= nodebench='BenchmarkNode'
	fi
	rec node interop "MICROLINK_BIN=$bin/microlink-amd64 MICROLINK_TS_BIN=$tsbin go test -run '^\$' -bench '$nodebench' -benchtime=1x -count=1 -timeout=30m -v $nodeflags ./bench" \
		>"$results/node.txt" 2>&1 || fail "node measurements failed"
	grep -E '^Benchmark|FAIL|--- ' "$results/node.txt" | head -40 >&2
	if ! grep -q '^BenchmarkNode' "$results/node.txt"; then
		{
			echo "The node measurements ran but produced no figures:"
			echo
			echo '```'
			grep -v '^\s*$' "$results/node.txt" | tail -15
			echo '```'
		} >"$results/node.skip"
	fi
fi

# --- 5b. what the device agent adds --------------------------------------------
# MagicDNS, the proxies, the status page, WhoIs and the new commands (issue
# #14) were built between $agentbase (main before them) and $agentdone
# (their last commit), both kept in history by the merge. Their goal: at
# most 0.5 MiB more stripped binary, and idle RSS within 0.5 MiB, with the
# status page and proxies off. Both commits are built and measured here,
# each idle node driven by the benchmark of its own tree.
agentbase=178fff6 agentdone=8a712c4
if [ "$mode" = full ] && git cat-file -e "$agentbase^{commit}" 2>/dev/null && git cat-file -e "$agentdone^{commit}" 2>/dev/null; then
	log "what the device agent adds: $agentbase to $agentdone"
	agenttmp=$(mktemp -d)
	# Median VmRSS, RssAnon and RssFile (MB) of three idle runs with one peer.
	idle_rss() {
		local out
		out=$(cd "$2/interop" && MICROLINK_BIN=$1 MICROLINK_TS_BIN=${tsbin:-} go test -run '^$' -bench 'BenchmarkNodeIdle/peers=1$/impl=microlink' -benchtime=1x -count=3 ./bench 2>>"$results/agent.log") || return 1
		median() { awk -v u="$1" '{ for (i = 1; i < NF; i++) if ($(i+1) == u) print $i }' <<<"$out" | sort -n | awk '{ v[NR] = $1 } END { if (NR < 3) exit 1; print v[2] }'; }
		echo "$(median rss-MB) $(median anon-MB) $(median file-MB)"
	}
	agent_ok=1
	for c in "$agentbase" "$agentdone"; do
		mkdir -p "$agenttmp/$c"
		git archive "$c" | tar -x -C "$agenttmp/$c"
		if ! (cd "$agenttmp/$c" && CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build -trimpath -ldflags='-s -w' -o "$bin/microlink-$c" ./cmd/microlink) 2>>"$results/agent.log"; then
			fail "building cmd/microlink at $c failed"
			agent_ok=
		fi
	done
	if [ -n "$agent_ok" ]; then
		if before=$(idle_rss "$bin/microlink-$agentbase" "$agenttmp/$agentbase") && after=$(idle_rss "$bin/microlink-$agentdone" "$agenttmp/$agentdone"); then
			read -r rb ab fb <<<"$before"
			read -r ra aa fa <<<"$after"
		fi
		sb=$(stat -c %s "$bin/microlink-$agentbase") sa=$(stat -c %s "$bin/microlink-$agentdone")
		awk -v sb="$sb" -v sa="$sa" -v base="$agentbase" -v done="$agentdone" -v rb="${rb:-}" -v ra="${ra:-}" -v ab="${ab:-}" -v aa="${aa:-}" -v fb="${fb:-}" -v fa="${fa:-}" 'BEGIN {
			mib = 1048576; d = (sa - sb) / mib
			printf "**The device agent** (MagicDNS, the SOCKS5 and HTTP proxies, the status page and /metrics, WhoIs and the commands of issue #14; from %s to %s) adds %.2f MiB to the stripped linux/amd64 binary: %.2f MiB before, %.2f MiB after. Goal ≤ 0.5 MiB: %s.", base, done, d, sb / mib, sa / mib, (d <= 0.5 ? "met" : "**missed**")
			if (rb != "") {
				dr = (ra - rb) * 1e6 / mib; da = (aa - ab) * 1e6 / mib; df = (fa - fb) * 1e6 / mib
				printf " Idle with one peer, proxies and status page off (median of three runs of BenchmarkNodeIdle, each binary with its own tree'"'"'s benchmark): VmRSS %.2f → %.2f MB (%+.2f MiB), of which private memory (RssAnon) %.2f → %.2f MB (%+.2f MiB) and the binary'"'"'s mapped pages (RssFile) %.2f → %.2f MB (%+.2f MiB). Goal within 0.5 MiB: %s.", rb, ra, dr, ab, aa, da, fb, fa, df, ((dr <= 0.5 && dr >= -0.5) ? "met" : ((da <= 0.5 && da >= -0.5) ? "**missed** for VmRSS (the larger binary'"'"'s pages), met for private memory" : "**missed**"))
			}
			print ""
		}' >>"$results/sizes.notes"
	fi
	rm -rf "$agenttmp"
fi

# --- 6. path failover ---------------------------------------------------------
log "path failover through NATs"
if [ "$(id -u)" != 0 ]; then
	echo "It needs root, for the network namespaces, veth pairs and nftables of the topology." >"$results/failover.skip"
else
	[ -n "${tsbin:-}" ] || tsbin=$(bash interop/build-tailscale.sh 2>>"$results/failover.log") || tsbin=
	[ "$mode" = quick ] && runs=1 || runs=10
	rec failover interop "MICROLINK_BENCH_OUT=$results MICROLINK_TS_BIN=$tsbin go test -run '^TestDirectPathCut\$' -count=$runs -timeout=20m -v ./nattest" \
		>"$results/failover.txt" 2>&1 || fail "path failover runs failed"
	grep -E 'after the cut|back to direct|^(--- |FAIL)' "$results/failover.txt" >&2
fi

# --- 7. under attack -----------------------------------------------------------
log "under attack"
if [ "$(id -u)" != 0 ]; then
	echo "It needs root, for the real tailscaled's TUN device in a network namespace." >"$results/attack.skip"
elif [ "$mode" = quick ]; then
	echo "Quick mode: the interop tests run the attack suite." >"$results/attack.skip"
else
	[ -n "${tsbin:-}" ] || tsbin=$(bash interop/build-tailscale.sh 2>>"$results/attack.log") || tsbin=
	rec attack interop "MICROLINK_BENCH_OUT=$results MICROLINK_TS_BIN=$tsbin go test -run '^TestUnderAttack\$' -count=1 -timeout=10m -v ./attacktest" \
		>"$results/attack.txt" 2>&1 || fail "attack suite failed"
	grep -E '^(    --- |--- |FAIL)' "$results/attack.txt" >&2
fi

# --- 8. TUN mode ----------------------------------------------------------------
log "TUN mode next to tailscaled"
if [ "$(id -u)" != 0 ]; then
	echo "It needs root, for the TUN devices and network namespaces." >"$results/tun.skip"
else
	[ -n "${tsbin:-}" ] || tsbin=$(bash interop/build-tailscale.sh 2>>"$results/tun.log") || tsbin=
	if [ "$mode" = quick ]; then
		tunflags="-short -count=1"
	else
		tunflags="-count=3"
	fi
	rec tun interop "MICROLINK_TS_BIN=$tsbin go test -run '^\$' -bench 'BenchmarkTUN' -benchtime=1x $tunflags -timeout=30m ./tuntest" \
		>"$results/tun.txt" 2>&1 || fail "TUN measurements failed"
	grep -E '^Benchmark|FAIL' "$results/tun.txt" >&2
	echo "TUN_LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$results/meta.env"
fi

# --- 9. TCP on impaired paths --------------------------------------------------
log "TCP on impaired paths"
if [ "$(id -u)" != 0 ]; then
	echo "It needs root, for the network namespaces, veth pairs and TUN devices of the emulated paths." >"$results/tcp.skip"
else
	[ -n "${tsbin:-}" ] || tsbin=$(bash interop/build-tailscale.sh 2>>"$results/tcp.log") || tsbin=
	[ "$mode" = quick ] && tcpquick=1 || tcpquick=0
	echo "TCP_LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$results/meta.env"
	rec tcp interop "MICROLINK_BENCH_OUT=$results MICROLINK_TCP_QUICK=$tcpquick MICROLINK_TS_BIN=$tsbin go test -run '^TestTCPImpaired\$' -count=1 -timeout=90m -v ./bench" \
		>"$results/tcp.txt" 2>&1 || fail "TCP on impaired paths failed"
	grep -E 'run [0-9]+, |^(--- |FAIL)' "$results/tcp.txt" >&2
	echo "TCP_LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$results/meta.env"
fi

echo "LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$results/meta.env"
# The soak takes an hour or more and is run by scripts/soak.sh; its last
# report goes into the document as it is.
[ -f docs/soak.md ] && cp docs/soak.md "$results/soak.md"

# --- 11. restart --------------------------------------------------------------
log "restart with the same state, next to tailscaled"
[ -n "${tsbin:-}" ] || tsbin=$(bash interop/build-tailscale.sh 2>>"$results/restart.log") || tsbin=
if [ "$mode" = quick ]; then restarts=1x; else restarts=5x; fi
rec restart interop "MICROLINK_TS_BIN=$tsbin go test -run '^\$' -bench '^BenchmarkRestart\$' -benchtime=$restarts -count=1 -timeout=20m ./bench" \
	>"$results/restart.txt" 2>&1 || fail "restart measurements failed"
grep -E '^Benchmark|FAIL' "$results/restart.txt" >&2

# --- report ------------------------------------------------------------------
if [ "$mode" = quick ]; then
	report=$results/BENCHMARKS.md
else
	mkdir -p docs
	report=$root/docs/BENCHMARKS.md
fi
(cd interop && go run ./bench/benchreport -in "$results" -out "$report") || fail "benchreport failed"
log "wrote $report (raw results in $results${keep:+, kept})"
if [ $status = 0 ]; then echo "bench: suite ran"; else echo "bench: suite ran with errors"; fi
exit $status
