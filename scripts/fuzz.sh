#!/usr/bin/env bash
# Runs every go test -fuzz target of the product module for a while each.
#   scripts/fuzz.sh [BUDGET]     a duration (30s) or a count of inputs (5000x); default 10s
# New crashers are written by go test to the package's testdata/fuzz and
# make this script fail. Go 1.26's fuzz coordinator can end a duration-bound
# run with a bare "context deadline exceeded" (golang/go#75804); such a run,
# with no failing input, is tried once more.
set -euo pipefail
cd "$(dirname "$0")/.."
t=${1:-10s}
fail=0
n=0
while read -r dir name; do
	n=$((n + 1))
	fuzz() { go test -run='^$' -fuzz="^${name}\$" -fuzztime="$t" "./$dir" 2>&1; }
	if ! out=$(fuzz) && { ! grep -q 'context deadline exceeded' <<<"$out" || grep -q 'Failing input' <<<"$out" || ! out=$(fuzz); }; then
		echo "FAIL $dir $name"
		echo "$out" | tail -20
		fail=$((fail + 1))
	else
		echo "ok   $dir $name"
	fi
done < <(grep -rHo --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*' . |
	sed -E 's#^\./##; s#/[^/]*_test\.go:func # #' | sort -u)
echo "fuzz: $((n - fail)) passed, $fail failed"
[ "$fail" -eq 0 ]
