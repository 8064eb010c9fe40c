// Package tun gives the node a TUN device on Linux and routes the host's
// traffic for the tailnet into it: the device itself (IFF_TUN, IFF_NO_PI),
// its addresses, and routes in a routing table of the node's own that
// policy routing rules consult before the main table, with the node's own
// sockets marked to bypass them (see package sockmark), as tailscaled
// does. Everything is configured through rtnetlink (package netlink); no
// ip command is needed.
//
// On other systems Open fails with ErrUnsupported.
package tun

import "errors"

// DefaultMTU is the device's MTU: Tailscale's, which every peer's
// tunnel carries without fragmenting.
const DefaultMTU = 1280

// Policy routing: the node's table, the priorities of its rules and the
// mark that its own sockets carry. They differ from tailscaled's (table
// 52, priorities 5210-5270, mark 0x80000), so that both can run on one
// host without taking each other's state for leftovers.
const (
	Table        = 0x6d6c // "ml"
	RulePriority = 5310   // the first of the node's rules; they use 5310-5370
	Mark         = 0x20000
	MarkMask     = 0xff0000
)

// ErrUnsupported is returned on systems without TUN support here.
var ErrUnsupported = errors.New("tun: TUN mode is supported only on Linux")

// ValidName checks a network interface name as Linux does: 1 to 15
// bytes, no '/', ':' or white space, and not "." or "..".
func ValidName(name string) error {
	if name == "" || len(name) > 15 || name == "." || name == ".." {
		return errors.New("tun: an interface name has 1 to 15 characters and is not . or ..")
	}
	for _, c := range []byte(name) {
		if c <= ' ' || c == '/' || c == ':' || c >= 0x7f {
			return errors.New("tun: an interface name may not hold '/', ':', spaces or non-ASCII characters")
		}
	}
	return nil
}
