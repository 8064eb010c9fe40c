#!/usr/bin/env bash
# Runs every go test -fuzz target of the product module for a while each.
#   scripts/fuzz.sh [DURATION]     (default 10s per target)
# New crashers are written by go test to the package's testdata/fuzz and
# make this script fail.
set -euo pipefail
cd "$(dirname "$0")/.."
t=${1:-10s}
fail=0
n=0
while read -r dir name; do
	n=$((n + 1))
	if ! out=$(go test -run='^$' -fuzz="^${name}\$" -fuzztime="$t" "./$dir" 2>&1); then
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
