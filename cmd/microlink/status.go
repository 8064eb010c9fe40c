package main

import (
	"fmt"
	"io"
	"net/netip"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/microlink-go/microlink"
)

// statusJSON is "status --json": the fields scripts read from "tailscale
// status --json", under the same names, and microlink's counters.
type statusJSON struct {
	Version        string
	TUN            bool
	BackendState   string // NoState, NeedsLogin, NeedsMachineAuth, Stopped, Starting, Running
	AuthURL        string
	TailscaleIPs   []string
	Self           *peerStatus
	Health         []string // control's health messages, and the node key's expiry warning
	MagicDNSSuffix string
	CurrentTailnet *tailnetStatus
	Peer           map[string]*peerStatus // by node key
	User           map[string]userJSON    // by user ID

	// ExitNodeStatus is the exit node in use, as tailscale reports it.
	ExitNodeStatus *exitNodeStatus `json:",omitempty"`

	// microlink: the TUN device (TUN mode) and the routes the node
	// advertises (control's approval is Self.PrimaryRoutes).
	TUNName          string   `json:",omitempty"`
	AdvertisedRoutes []string `json:",omitempty"`

	// microlink: the last control error while the node retries, and its
	// own counters.
	Error string `json:",omitempty"`
	Stats microlink.Stats
}

type exitNodeStatus struct {
	ID           string
	Online       bool
	TailscaleIPs []string
}

type tailnetStatus struct {
	Name            string
	MagicDNSSuffix  string
	MagicDNSEnabled bool
}

type userJSON struct {
	ID          int64
	LoginName   string
	DisplayName string
}

// peerStatus is tailscale's PeerStatus, in part, with a few microlink
// details after it.
type peerStatus struct {
	ID             string
	PublicKey      string
	HostName       string
	DNSName        string
	OS             string
	UserID         int64
	TailscaleIPs   []string
	AllowedIPs     []string
	Tags           []string `json:",omitempty"`
	PrimaryRoutes  []string `json:",omitempty"`
	CurAddr        string   // the direct path's address, "" when relayed
	Relay          string   // the peer's home DERP region code
	RxBytes        int64
	TxBytes        int64
	LastSeen       time.Time
	LastHandshake  time.Time
	Online         bool
	ExitNode       bool       // this node sends its internet traffic through the peer
	ExitNodeOption bool       // the peer offers to be an exit node
	Active         bool       // traffic flowed in the last two minutes
	KeyExpiry      *time.Time `json:",omitempty"` // Self only: when the node key expires (control's clock)
	Expired        bool       `json:",omitempty"`

	// microlink: of the peer's routes, those this node uses
	// (--accept-routes, --exit-node).
	AcceptedRoutes []string `json:",omitempty"`

	// microlink: the path in use ("direct", "derp" or ""), the relay
	// region it goes through, and the last measured round trip.
	Path       string  `json:",omitempty"`
	DERPRegion int     `json:",omitempty"`
	LatencyMS  float64 `json:",omitempty"`
}

// backendState maps a node state onto tailscale's names.
func backendState(s microlink.State) string {
	switch s {
	case microlink.Stopped:
		return "Stopped"
	case microlink.Connecting:
		return "Starting"
	case microlink.NeedsLogin:
		return "NeedsLogin"
	case microlink.NeedsApproval:
		return "NeedsMachineAuth"
	case microlink.Connected:
		return "Running"
	}
	return "NoState"
}

func strs[T fmt.Stringer](xs []T) []string {
	out := make([]string, 0, len(xs))
	for _, x := range xs {
		out = append(out, x.String())
	}
	return out
}

func statusOf(n *microlink.Node) statusJSON {
	st := n.Status()
	out := statusJSON{
		Version:          microlink.VersionString(),
		TUN:              st.TUN != "",
		TUNName:          st.TUN,
		AdvertisedRoutes: strs(st.AdvertisedRoutes),
		BackendState:     backendState(st.State),
		AuthURL:          st.AuthURL,
		TailscaleIPs:     strs(st.Addresses),
		Peer:             map[string]*peerStatus{},
		User:             map[string]userJSON{},
		Stats:            n.Stats(),
	}
	out.Health = st.Health
	if st.Err != nil {
		out.Error = st.Err.Error()
	}
	codes := n.DERPRegionCodes()
	self := &peerStatus{
		PublicKey: st.NodeKey, HostName: st.Hostname, DNSName: dnsName(st.FQDN), OS: runtime.GOOS,
		TailscaleIPs: out.TailscaleIPs, AllowedIPs: prefixesOf(st.Addresses), Relay: codes[st.HomeDERP],
		Online: st.State == microlink.Connected,
	}
	for _, r := range st.ApprovedRoutes {
		self.AllowedIPs = append(self.AllowedIPs, r.String())
		self.PrimaryRoutes = append(self.PrimaryRoutes, r.String())
	}
	if !st.KeyExpiry.IsZero() {
		e := st.KeyExpiry.UTC()
		self.KeyExpiry = &e
	}
	if _, suffix, ok := strings.Cut(st.FQDN, "."); ok {
		out.MagicDNSSuffix = suffix
		out.CurrentTailnet = &tailnetStatus{Name: suffix, MagicDNSSuffix: suffix, MagicDNSEnabled: true}
	}
	if len(st.Addresses) > 0 {
		if w, err := n.WhoIs(st.Addresses[0].String()); err == nil {
			self.UserID, self.Tags = w.User.ID, w.Tags
			self.ID = w.Node.StableID
			if w.User.ID != 0 {
				out.User[strconv.FormatInt(w.User.ID, 10)] = userJSON(w.User)
			}
		}
	}
	out.Self = self
	now := time.Now()
	for _, p := range n.Peers() {
		ps := &peerStatus{
			ID: p.StableID, PublicKey: p.NodeKey, HostName: p.Hostname, DNSName: dnsName(p.FQDN), OS: p.OS,
			UserID: p.UserID, TailscaleIPs: strs(p.Addresses), Tags: p.Tags,
			Relay: codes[p.HomeDERP], RxBytes: int64(p.RxBytes), TxBytes: int64(p.TxBytes),
			LastSeen: p.LastSeen, LastHandshake: p.LastHandshake, Online: p.Online, Expired: p.Expired,
			Path: p.Path, DERPRegion: p.DERPRegion, LatencyMS: ms(p.Latency),
			Active: !p.LastHandshake.IsZero() && now.Sub(p.LastHandshake) < 3*time.Minute, // sessions rekey every 2 minutes while used
		}
		if ps.HostName == "" {
			ps.HostName = p.Name
		}
		ps.AllowedIPs = prefixesOf(p.Addresses)
		for _, r := range p.Routes {
			ps.AllowedIPs = append(ps.AllowedIPs, r.String())
			if r.Bits() == 0 {
				ps.ExitNodeOption = true
			} else {
				ps.PrimaryRoutes = append(ps.PrimaryRoutes, r.String())
			}
		}
		ps.ExitNode = p.ExitNode
		if len(p.AcceptedRoutes) > 0 {
			ps.AcceptedRoutes = strs(p.AcceptedRoutes)
		}
		if p.ExitNode {
			out.ExitNodeStatus = &exitNodeStatus{ID: p.StableID, Online: p.Online, TailscaleIPs: prefixesOf(p.Addresses)}
		}
		if p.Path == "direct" {
			ps.CurAddr = p.Endpoint.String()
		}
		out.Peer[p.NodeKey] = ps
		if uid := strconv.FormatInt(p.UserID, 10); p.UserID != 0 && out.User[uid].ID == 0 {
			if up, ok := n.UserProfile(p.UserID); ok {
				out.User[uid] = userJSON(up)
			}
		}
	}
	return out
}

func dnsName(fqdn string) string {
	if fqdn == "" {
		return ""
	}
	return fqdn + "."
}

func prefixesOf(addrs []netip.Addr) []string {
	out := make([]string, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, netip.PrefixFrom(a, a.BitLen()).String())
	}
	return out
}

// sortedPeers returns the peers by host name.
func sortedPeers(st statusJSON) []*peerStatus {
	ps := make([]*peerStatus, 0, len(st.Peer))
	for _, p := range st.Peer {
		ps = append(ps, p)
	}
	slices.SortFunc(ps, func(a, b *peerStatus) int { return strings.Compare(a.DNSName+a.HostName, b.DNSName+b.HostName) })
	return ps
}

// shortName is a peer's first DNS label, or its host name.
func shortName(p *peerStatus) string {
	if l, _, _ := strings.Cut(p.DNSName, "."); l != "" {
		return l
	}
	return p.HostName
}

func printStatus(w io.Writer, st statusJSON) {
	tw := newTable(w, 2)
	first := func(a []string) string {
		if len(a) == 0 {
			return "-"
		}
		return a[0]
	}
	name := "-"
	if st.Self != nil {
		name = shortName(st.Self)
	}
	fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", first(st.TailscaleIPs), name, "self", st.BackendState)
	if st.AuthURL != "" {
		fmt.Fprintf(tw, "\tlog in at:\t%s\t\n", st.AuthURL)
	}
	for _, p := range sortedPeers(st) {
		online := "offline"
		if p.Online {
			online = "online"
		}
		if p.Expired {
			online = "expired"
		}
		path := "-"
		switch p.Path {
		case "direct":
			path = "direct " + p.CurAddr
		case "derp":
			path = fmt.Sprintf("DERP(%d)", p.DERPRegion)
		}
		lat := "-"
		if p.LatencyMS > 0 {
			lat = fmt.Sprintf("%.2fms", p.LatencyMS)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\trx %d tx %d%s\n", first(p.TailscaleIPs), shortName(p), p.OS, online, path, lat, p.RxBytes, p.TxBytes, peerRoutesNote(p))
	}
	tw.Flush()
	if st.TUNName != "" {
		fmt.Fprintf(w, "\nTUN device: %s\n", st.TUNName)
	}
	if len(st.AdvertisedRoutes) > 0 {
		var approved []string
		if st.Self != nil {
			approved = st.Self.PrimaryRoutes
		}
		fmt.Fprintf(w, "\nRoutes advertised: %s; approved: %s\n", routeList(st.AdvertisedRoutes), routeList(approved))
	}
	for _, p := range st.Peer {
		if p.ExitNode {
			fmt.Fprintf(w, "\nExit node in use: %s (%s)\n", shortName(p), first(p.TailscaleIPs))
		}
	}
	if s := st.Stats; s.DirectPacketsIn+s.DirectPacketsOut+s.DERPPacketsIn+s.DERPPacketsOut > 0 {
		fmt.Fprintf(w, "\nWireGuard bytes: direct rx %d tx %d, DERP rx %d tx %d\n",
			s.DirectBytesIn, s.DirectBytesOut, s.DERPBytesIn, s.DERPBytesOut)
	}
	if st.Error != "" {
		fmt.Fprintf(w, "\n# Control server unreachable or refusing; retrying. Last error:\n#     %s\n", st.Error)
	}
	if len(st.Health) > 0 {
		fmt.Fprintf(w, "\n# Health check:\n")
		for _, h := range st.Health {
			fmt.Fprintf(w, "#     - %s\n", h)
		}
	}
}

func routeList(rs []string) string {
	if len(rs) == 0 {
		return "none"
	}
	return strings.Join(rs, ", ")
}

// peerRoutesNote says what a peer routes and what of it this node uses.
func peerRoutesNote(p *peerStatus) string {
	var notes []string
	switch {
	case p.ExitNode:
		notes = append(notes, "exit node in use")
	case p.ExitNodeOption:
		notes = append(notes, "offers exit node")
	}
	var accepted []string
	for _, r := range p.AcceptedRoutes {
		if r != "0.0.0.0/0" && r != "::/0" {
			accepted = append(accepted, r)
		}
	}
	subnets := p.PrimaryRoutes
	switch {
	case len(subnets) == 0:
	case len(accepted) == len(subnets):
		notes = append(notes, "routes "+strings.Join(subnets, ",")+" (accepted)")
	case len(accepted) == 0:
		notes = append(notes, "routes "+strings.Join(subnets, ",")+" (not accepted)")
	default:
		notes = append(notes, "routes "+strings.Join(subnets, ",")+" (accepted "+strings.Join(accepted, ",")+")")
	}
	if len(notes) == 0 {
		return ""
	}
	return "\t" + strings.Join(notes, "; ")
}
