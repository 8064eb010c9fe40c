package microlink

import (
	"net/netip"
	"strings"

	"github.com/microlink-go/microlink/internal/netmon"
)

// watchNetwork starts the network monitor, which rebinds the node when the
// host's addresses or default routes change. Without it, Rebind (SIGHUP
// for the daemon) still works.
func (n *Node) watchNetwork() *netmon.Monitor {
	m, err := netmon.New(netmon.Options{
		OnChange: n.onNetworkChange,
		Ignore:   n.ignoreInterface,
		Logger:   n.logger,
	})
	if err != nil {
		n.logger.Warn("microlink: not watching the network; call Rebind after a change", "err", err)
		return nil
	}
	return m
}

func (n *Node) onNetworkChange(old, new netmon.State) {
	n.logger.Info("microlink: network changed; rebinding", "change", old.Diff(new))
	if err := n.Rebind(); err != nil {
		n.logger.Warn("microlink: rebind after a network change", "err", err)
	}
}

// tailscaleULA is the IPv6 range of Tailscale's tailnet addresses.
var tailscaleULA = netip.MustParsePrefix("fd7a:115c:a1e0::/48")

// ignoreInterface tells the network monitor to leave out the interfaces
// that carry tailnet traffic themselves: the node's TUN device (in TUN
// mode), any interface holding one of the node's tailnet addresses, or
// another Tailscale client's.
func (n *Node) ignoreInterface(name string, addrs []netip.Prefix) bool {
	n.mu.Lock()
	t := n.tun
	n.mu.Unlock()
	if (t != nil && name == t.dev.Name()) || strings.HasPrefix(name, "tailscale") {
		return true
	}
	self, _ := n.nm.Self()
	for _, a := range addrs {
		if tailscaleULA.Contains(a.Addr()) {
			return true
		}
		for _, s := range self.Addresses {
			if s.Addr() == a.Addr() {
				return true
			}
		}
	}
	return false
}
