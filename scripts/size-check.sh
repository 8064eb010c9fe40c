#!/usr/bin/env bash
# size-check.sh: builds the stripped linux/amd64 CLI the way the size goal
# is measured and fails if it is larger than the budget in .ci/size-budget,
# so that growth is always a decision: whoever needs the bytes raises the
# number in the same commit and says why. It also prints the xz-compressed
# size (the form that sits in a router's squashfs).
set -euo pipefail
cd "$(dirname "$0")/.."
budget=$(grep -v '^#' .ci/size-budget | grep -m1 -E '^[0-9]+$') || {
	echo "size-check: no budget in .ci/size-budget" >&2
	exit 2
}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build -trimpath -ldflags='-s -w' -o "$out/microlink" ./cmd/microlink
size=$(stat -c %s "$out/microlink")
xzsize=-
if command -v xz >/dev/null 2>&1; then
	xzsize=$(xz -9e -c "$out/microlink" | wc -c)
fi
mib() { awk -v b="$1" 'BEGIN { printf "%.2f MiB", b / 1048576 }'; }
echo "stripped linux/amd64 CLI: $size B ($(mib "$size")), xz -9e: $xzsize B; budget $budget B ($(mib "$budget"))"
if [ "$size" -gt "$budget" ]; then
	echo "size-check: the CLI grew $((size - budget)) B past the budget in .ci/size-budget." >&2
	echo "Make it smaller, or raise the budget in the same commit and say what the bytes buy." >&2
	exit 1
fi
