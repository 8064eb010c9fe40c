#!/bin/sh
# build-tailscale.sh [DIR]
#
# Builds tailscaled, tailscale and derper from the tailscale.com version
# required by this module into DIR, skipping binaries already there, and
# prints DIR. Point MICROLINK_TS_BIN at it so that interop tests use these
# binaries instead of building their own.
#
# DIR defaults to the directory the lab package builds into:
# $MICROLINK_CACHE/tailscale-VERSION, where MICROLINK_CACHE defaults to
# ${XDG_CACHE_HOME:-$HOME/.cache}/microlink-interop.
set -eu

cd "$(dirname "$0")"

version=$(go list -m -f '{{.Version}}' tailscale.com)
if [ $# -ge 1 ]; then
	dir=$1
else
	cache=${MICROLINK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/microlink-interop}
	dir=$cache/tailscale-$version
fi
mkdir -p "$dir"

# find_missing sets $missing to the packages whose binary is not in $dir.
find_missing() {
	missing=
	for cmd in tailscaled tailscale derper; do
		[ -x "$dir/$cmd" ] || missing="$missing tailscale.com/cmd/$cmd"
	done
}

find_missing
if [ -n "$missing" ] && command -v flock >/dev/null 2>&1; then
	# The lock the lab package holds while it builds; another build may
	# have finished while we waited.
	exec 9>"$dir.lock"
	flock 9
	find_missing
fi

if [ -n "$missing" ]; then
	tmp=$(mktemp -d "$dir/.build-XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	echo "building$missing ($version) into $dir: a few minutes, once" >&2
	# Word splitting of $missing is intended.
	go build -o "$tmp/" $missing
	mv "$tmp"/* "$dir/"
fi

echo "$dir"
