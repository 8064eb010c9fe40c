#!/bin/sh
# build-headscale.sh [DIR]
#
# Builds the headscale command, at the version pinned by the module in
# headscale/ next to this script, into DIR, skipping the build when DIR
# already holds it, and prints DIR. Point MICROLINK_HEADSCALE_BIN at it so
# that the headscaletest package uses it instead of running this script.
#
# DIR defaults to $MICROLINK_CACHE/headscale-VERSION, where MICROLINK_CACHE
# defaults to ${XDG_CACHE_HOME:-$HOME/.cache}/microlink-interop.
set -eu

cd "$(dirname "$0")/headscale"

version=$(go list -m -f '{{.Version}}' github.com/juanfont/headscale)
if [ $# -ge 1 ]; then
	dir=$1
else
	cache=${MICROLINK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/microlink-interop}
	dir=$cache/headscale-$version
fi
mkdir -p "$dir"

if [ ! -x "$dir/headscale" ] && command -v flock >/dev/null 2>&1; then
	# Another build may have finished while we waited for the lock.
	exec 9>"$dir.lock"
	flock 9
fi

if [ ! -x "$dir/headscale" ]; then
	tmp=$(mktemp -d "$dir/.build-XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	echo "building headscale $version into $dir" >&2
	# The module's go.sum is complete: the build needs no network access
	# beyond the module proxy and never rewrites go.mod or go.sum.
	go build -mod=readonly -o "$tmp/headscale" github.com/juanfont/headscale/cmd/headscale
	mv "$tmp/headscale" "$dir/headscale"
fi

echo "$dir"
