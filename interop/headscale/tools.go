//go:build tools

// Package headscale pins the version of Headscale, the open-source control
// server, that the interop tests run against. It is a module of its own
// because Headscale requires an older tailscale.com than the interop
// module; build-headscale.sh builds its command from here.
package headscale

import _ "github.com/juanfont/headscale/cmd/headscale"
