package microlink

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/microlink-go/microlink/internal/tailcfg"
)

// UserProfile is a tailnet user as control describes it.
type UserProfile struct {
	ID          int64
	LoginName   string // such as "alice@example.com"; "tagged-devices" for tagged nodes on Tailscale
	DisplayName string
}

// WhoIsResult tells who is behind a tailnet address: the node, its owner
// and its ACL tags. A server can use it to authorize the caller of a
// connection by its remote address.
type WhoIsResult struct {
	Self bool // the address is this node's own
	Node Peer // the node; for Self only the names, IDs, addresses, tags and key are set
	User UserProfile
	Tags []string // ACL tags; a tagged node is owned by its tags, not its user
}

// WhoIs returns the node, user and tags behind a tailnet address, given
// as "ip" or "ip:port" (as a connection's RemoteAddr prints it). It knows
// the peers and the node itself, from the current netmap.
func (n *Node) WhoIs(addr string) (WhoIsResult, error) {
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		ap, perr := netip.ParseAddrPort(addr)
		if perr != nil {
			return WhoIsResult{}, fmt.Errorf("microlink: whois: %q is not an IP address or IP:port", addr)
		}
		ip = ap.Addr()
	}
	ip = ip.Unmap()
	if p, ok := n.nm.PeerByIP(ip); ok {
		n.mu.Lock()
		data := n.data
		n.mu.Unlock()
		return WhoIsResult{
			Node: n.peerInfo(data, &p, n.nm.Now()),
			User: n.userProfile(p.User),
			Tags: slices.Clone(p.Tags),
		}, nil
	}
	if self, ok := n.nm.Self(); ok && containsIP(self.Addresses, ip) {
		res := WhoIsResult{Self: true, User: n.userProfile(self.User), Tags: slices.Clone(self.Tags)}
		res.Node = Peer{
			Name:     firstLabelOf(self.Name, n.cfg.Hostname),
			FQDN:     strings.TrimSuffix(self.Name, "."),
			Hostname: n.cfg.Hostname,
			StableID: self.StableID,
			UserID:   int64(self.User),
			Tags:     slices.Clone(self.Tags),
			NodeKey:  self.Key.String(),
			HomeDERP: self.HomeDERP,
			Online:   true,
		}
		for _, a := range self.Addresses {
			res.Node.Addresses = append(res.Node.Addresses, a.Addr())
		}
		ipv4First(res.Node.Addresses)
		return res, nil
	}
	return WhoIsResult{}, fmt.Errorf("microlink: whois: no node has the address %v", ip)
}

// UserProfile returns the profile of a tailnet user by ID (Peer.UserID),
// as the netmap has it.
func (n *Node) UserProfile(id int64) (UserProfile, bool) {
	up, ok := n.nm.UserProfile(tailcfg.UserID(id))
	if !ok {
		return UserProfile{}, false
	}
	return UserProfile{ID: int64(up.ID), LoginName: up.LoginName, DisplayName: up.DisplayName}, true
}

func (n *Node) userProfile(id tailcfg.UserID) UserProfile {
	up, ok := n.nm.UserProfile(id)
	if !ok {
		return UserProfile{ID: int64(id)}
	}
	return UserProfile{ID: int64(up.ID), LoginName: up.LoginName, DisplayName: up.DisplayName}
}

func containsIP(pfxs []netip.Prefix, ip netip.Addr) bool {
	for _, p := range pfxs {
		if p.Addr() == ip {
			return true
		}
	}
	return false
}

// firstLabelOf returns the first label of a MagicDNS name, or fallback.
func firstLabelOf(name, fallback string) string {
	if name == "" {
		return fallback
	}
	l, _, _ := strings.Cut(name, ".")
	return l
}
