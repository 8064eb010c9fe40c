// Package tailcfg declares the JSON messages of the Tailscale control protocol
// that microlink sends and reads: registration, map requests and responses,
// nodes, the DERP map and packet-filter rules.
//
// Only the fields microlink uses or must carry are declared. Field names match
// the wire names, so unknown fields from newer servers are skipped by
// encoding/json and absent ones keep their zero value, which the protocol
// defines as "unchanged" for most delta fields (see MapResponse).
package tailcfg

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"time"

	"github.com/microlink-go/microlink/internal/key"
)

// CurrentCapabilityVersion is the capability version microlink advertises in
// /key?v=, the Noise prologue, RegisterRequest.Version and MapRequest.Version.
//
// 115 promises: delta peers and user profiles, nil PacketFilter/DNSConfig/Node
// mean unchanged, PeerSeenChange, OnlineChange, PeersChangedPatch,
// Node.Expired, incremental DERP maps with HomeParams, read-only streaming map
// requests with lite updates, named PacketFilters, Node.HomeDERP, nil
// AllowedIPs meaning Addresses, and DERPRegion.NoMeasureNoHome. It is at least
// 113, the floor current Headscale releases enforce. Higher versions promise
// peer-relay support, which microlink does not offer.
const CurrentCapabilityVersion = 115

// NodeID is a node's integer identifier in the control server's database.
type NodeID int64

// UserID is a user's integer identifier.
type UserID int64

// EndpointType says how an endpoint was discovered.
type EndpointType int

// Endpoint types, as MapRequest.EndpointTypes carries them.
const (
	EndpointUnknown        EndpointType = 0
	EndpointLocal          EndpointType = 1
	EndpointSTUN           EndpointType = 2
	EndpointPortmapped     EndpointType = 3
	EndpointSTUN4LocalPort EndpointType = 4
	EndpointExplicitConf   EndpointType = 5
)

// DerpMagicIP is the fake IPv4 address whose port numbers name DERP regions
// in the legacy Node.DERP string ("127.3.3.40:<region>").
var DerpMagicIP = netip.AddrFrom4([4]byte{127, 3, 3, 40})

// Node is a node in the tailnet: the self node or a peer.
type Node struct {
	ID                  NodeID
	StableID            string
	Name                string // MagicDNS FQDN with a trailing dot
	User                UserID
	Sharer              UserID `json:",omitempty"`
	Key                 key.NodePublic
	KeyExpiry           time.Time         `json:",omitzero"`
	Machine             key.MachinePublic `json:",omitzero"`
	DiscoKey            key.DiscoPublic   `json:",omitzero"`
	Addresses           []netip.Prefix
	AllowedIPs          []netip.Prefix               `json:",omitzero"` // nil means the same as Addresses
	Endpoints           []netip.AddrPort             `json:",omitempty"`
	LegacyDERPString    string                       `json:"DERP,omitempty"` // "127.3.3.40:<region>"
	HomeDERP            int                          `json:",omitempty"`
	Hostinfo            *Hostinfo                    `json:",omitempty"`
	Created             time.Time                    `json:",omitzero"`
	Cap                 int                          `json:",omitempty"`
	Tags                []string                     `json:",omitempty"`
	PrimaryRoutes       []netip.Prefix               `json:",omitempty"`
	LastSeen            *time.Time                   `json:",omitempty"`
	Online              *bool                        `json:",omitempty"`
	MachineAuthorized   bool                         `json:",omitempty"`
	Capabilities        []string                     `json:",omitempty"`
	CapMap              map[string][]json.RawMessage `json:",omitempty"`
	UnsignedPeerAPIOnly bool                         `json:",omitempty"`
	ComputedName        string                       `json:",omitempty"`
	Expired             bool                         `json:",omitempty"`
	IsWireGuardOnly     bool                         `json:",omitempty"`
	IsJailed            bool                         `json:",omitempty"`

	SelfNodeV4MasqAddrForThisPeer *netip.Addr `json:",omitempty"`
	SelfNodeV6MasqAddrForThisPeer *netip.Addr `json:",omitempty"`
}

// HomeRegion returns the node's home DERP region: HomeDERP if set, else the
// region encoded in the legacy DERP string, else 0 (unknown).
func (n *Node) HomeRegion() int {
	if n.HomeDERP != 0 {
		return n.HomeDERP
	}
	if n.LegacyDERPString == "" {
		return 0
	}
	ap, err := netip.ParseAddrPort(n.LegacyDERPString)
	if err != nil || ap.Addr() != DerpMagicIP {
		return 0
	}
	return int(ap.Port())
}

// EffectiveAllowedIPs returns AllowedIPs, or Addresses when AllowedIPs is nil
// or the node may only be reached for its own addresses.
func (n *Node) EffectiveAllowedIPs() []netip.Prefix {
	if n.AllowedIPs == nil || n.UnsignedPeerAPIOnly {
		return n.Addresses
	}
	return n.AllowedIPs
}

// Hostinfo describes the host a node runs on.
type Hostinfo struct {
	IPNVersion      string         `json:",omitempty"`
	BackendLogID    string         `json:",omitempty"`
	OS              string         `json:",omitempty"`
	OSVersion       string         `json:",omitempty"`
	App             string         `json:",omitempty"`
	DeviceModel     string         `json:",omitempty"`
	Hostname        string         `json:",omitempty"`
	Machine         string         `json:",omitempty"`
	GoArch          string         `json:",omitempty"`
	GoArchVar       string         `json:",omitempty"`
	GoVersion       string         `json:",omitempty"`
	RoutableIPs     []netip.Prefix `json:",omitempty"`
	RequestTags     []string       `json:",omitempty"`
	NetInfo         *NetInfo       `json:",omitempty"`
	Userspace       OptBool        `json:",omitempty"`
	ShieldsUp       bool           `json:",omitempty"`
	NoLogsNoSupport bool           `json:",omitempty"`
}

// NetInfo is what a node knows of its network; control publishes
// PreferredDERP as the node's HomeDERP.
type NetInfo struct {
	MappingVariesByDestIP OptBool            `json:",omitempty"`
	WorkingIPv6           OptBool            `json:",omitempty"`
	OSHasIPv6             OptBool            `json:",omitempty"`
	WorkingUDP            OptBool            `json:",omitempty"`
	WorkingICMPv4         OptBool            `json:",omitempty"`
	HavePortMap           bool               `json:",omitempty"`
	PreferredDERP         int                `json:",omitempty"`
	LinkType              string             `json:",omitempty"`
	DERPLatency           map[string]float64 `json:",omitempty"`
}

// OptBool is a tri-state boolean: "true", "false", or "" when unknown. On
// the wire it is a JSON boolean, or null (or absent) when unknown.
type OptBool string

// MarshalJSON encodes true, false or null.
func (b OptBool) MarshalJSON() ([]byte, error) {
	switch b {
	case "true", "false":
		return []byte(b), nil
	}
	return []byte("null"), nil
}

// UnmarshalJSON accepts true, false and null, and the quoted forms "true"
// and "false" some servers write.
func (b *OptBool) UnmarshalJSON(j []byte) error {
	switch string(j) {
	case "true", `"true"`:
		*b = "true"
	case "false", `"false"`:
		*b = "false"
	case "null", `""`:
		*b = ""
	default:
		return fmt.Errorf("tailcfg: invalid optional boolean %s", j)
	}
	return nil
}

// NewOptBool returns "true" or "false".
func NewOptBool(b bool) OptBool {
	if b {
		return "true"
	}
	return "false"
}

// RegisterRequest is the body of POST /machine/register.
type RegisterRequest struct {
	Version          int
	NodeKey          key.NodePublic
	OldNodeKey       key.NodePublic
	NLKey            string                `json:",omitempty"`
	Auth             *RegisterResponseAuth `json:",omitempty"`
	Expiry           time.Time
	Followup         string
	Hostinfo         *Hostinfo
	Ephemeral        bool   `json:",omitempty"`
	NodeKeySignature []byte `json:",omitempty"`
	Tailnet          string `json:",omitempty"`
}

// RegisterResponseAuth carries a pre-authorized key.
type RegisterResponseAuth struct {
	AuthKey string `json:",omitempty"`
}

// User is a tailnet user.
type User struct {
	ID          UserID
	DisplayName string `json:",omitempty"`
}

// Login is a login identity.
type Login struct {
	ID          int64  `json:",omitempty"`
	LoginName   string `json:",omitempty"`
	DisplayName string `json:",omitempty"`
}

// RegisterResponse is the answer to a RegisterRequest.
type RegisterResponse struct {
	User              User
	Login             Login
	NodeKeyExpired    bool
	MachineAuthorized bool
	AuthURL           string
	NodeKeySignature  []byte `json:",omitempty"`
	Error             string
}

// MapRequest is the body of POST /machine/map, for both the streaming poll
// (Stream true) and lite updates (Stream false, OmitPeers true).
type MapRequest struct {
	Version       int
	Compress      string `json:",omitempty"`
	KeepAlive     bool   `json:",omitempty"`
	NodeKey       key.NodePublic
	DiscoKey      key.DiscoPublic
	Stream        bool `json:",omitempty"`
	Hostinfo      *Hostinfo
	Endpoints     []netip.AddrPort `json:",omitempty"`
	EndpointTypes []EndpointType   `json:",omitempty"`
	OmitPeers     bool             `json:",omitempty"`
	DebugFlags    []string         `json:",omitempty"`
}

// MapResponse is one message of the map stream. The first full message
// carries Node and Peers; later ones are deltas where a zero value means
// "unchanged", except as documented per field.
type MapResponse struct {
	KeepAlive         bool                    `json:",omitempty"`
	PingRequest       *PingRequest            `json:",omitempty"`
	PopBrowserURL     string                  `json:",omitempty"`
	Node              *Node                   `json:",omitempty"`
	DERPMap           *DERPMap                `json:",omitempty"`
	Peers             []*Node                 `json:",omitempty"` // non-empty: the complete peer list
	PeersChanged      []*Node                 `json:",omitempty"`
	PeersRemoved      []NodeID                `json:",omitempty"`
	PeersChangedPatch []*PeerChange           `json:",omitempty"`
	PeerSeenChange    map[NodeID]bool         `json:",omitempty"`
	OnlineChange      map[NodeID]bool         `json:",omitempty"`
	DNSConfig         *DNSConfig              `json:",omitempty"`
	Domain            string                  `json:",omitempty"`
	PacketFilter      []FilterRule            `json:",omitempty"` // nil: unchanged; non-nil empty: deny all
	PacketFilters     map[string][]FilterRule `json:",omitempty"`
	UserProfiles      []UserProfile           `json:",omitempty"`
	// Health is control's list of the node's problems: nil means
	// unchanged, empty (non-nil) means none.
	Health []string `json:",omitempty"`
	// DisplayMessages patches control's structured health messages by ID:
	// a nil value deletes one, and the ID "*" with a nil value clears all
	// before the others apply.
	DisplayMessages map[string]*DisplayMessage `json:",omitempty"`
	ControlTime     *time.Time                 `json:",omitempty"`
	Debug           *Debug                     `json:",omitempty"`
}

// DisplayMessage is a health message from control meant for the user.
type DisplayMessage struct {
	Title               string
	Text                string
	Severity            string                // "high", "medium" or "low"
	ImpactsConnectivity bool                  `json:",omitempty"`
	PrimaryAction       *DisplayMessageAction `json:",omitempty"`
}

// DisplayMessageAction is a link offered with a DisplayMessage.
type DisplayMessageAction struct {
	URL   string
	Label string
}

// PeerChange is a small change to one peer (MapResponse.PeersChangedPatch).
// Nil or zero fields are unchanged.
type PeerChange struct {
	NodeID     NodeID
	DERPRegion int                          `json:",omitempty"`
	Cap        int                          `json:",omitempty"`
	CapMap     map[string][]json.RawMessage `json:",omitempty"`
	Endpoints  []netip.AddrPort             `json:",omitempty"`
	Key        *key.NodePublic              `json:",omitempty"`
	DiscoKey   *key.DiscoPublic             `json:",omitempty"`
	Online     *bool                        `json:",omitempty"`
	LastSeen   *time.Time                   `json:",omitempty"`
	KeyExpiry  *time.Time                   `json:",omitempty"`
}

// PingRequest asks the node to prove it is alive or to ping another node.
type PingRequest struct {
	URL        string
	URLIsNoise bool       `json:",omitempty"`
	Log        bool       `json:",omitempty"`
	Types      string     `json:",omitempty"`
	IP         netip.Addr `json:",omitzero"`
	Payload    []byte     `json:",omitempty"`
}

// PingResponse reports the result of a ping that control asked for.
type PingResponse struct {
	Type           string
	IP             string  `json:",omitempty"`
	NodeIP         string  `json:",omitempty"`
	NodeName       string  `json:",omitempty"`
	Err            string  `json:",omitempty"`
	LatencySeconds float64 `json:",omitempty"`
	Endpoint       string  `json:",omitempty"`
	DERPRegionID   int     `json:",omitempty"`
	DERPRegionCode string  `json:",omitempty"`
	PeerAPIPort    uint16  `json:",omitempty"`
	IsLocalIP      bool    `json:",omitempty"`
}

// FilterRule allows packets from SrcIPs to DstPorts over IPProto.
type FilterRule struct {
	SrcIPs   []string
	SrcBits  []int          `json:",omitempty"`
	DstPorts []NetPortRange `json:",omitempty"`
	IPProto  []int          `json:",omitempty"`
}

// NetPortRange is a destination: an IP, CIDR, range or "*", and ports.
type NetPortRange struct {
	IP    string
	Bits  *int `json:",omitempty"`
	Ports PortRange
}

// PortRange is an inclusive port range.
type PortRange struct {
	First uint16
	Last  uint16
}

// UserProfile describes a user for display.
type UserProfile struct {
	ID            UserID
	LoginName     string
	DisplayName   string
	ProfilePicURL string `json:",omitempty"`
}

// DNSConfig is the tailnet's DNS configuration.
type DNSConfig struct {
	Resolvers    []*Resolver            `json:",omitempty"`
	Routes       map[string][]*Resolver `json:",omitempty"`
	Domains      []string               `json:",omitempty"`
	Proxied      bool                   `json:",omitempty"`
	Nameservers  []netip.Addr           `json:",omitempty"`
	CertDomains  []string               `json:",omitempty"`
	ExtraRecords []DNSRecord            `json:",omitempty"`
}

// Resolver is a DNS resolver address.
type Resolver struct {
	Addr string `json:",omitempty"`
}

// DNSRecord is an extra DNS record served by MagicDNS.
type DNSRecord struct {
	Name  string
	Type  string `json:",omitempty"`
	Value string
}

// Debug carries control's debug instructions.
type Debug struct {
	SleepSeconds float64 `json:",omitempty"`
	Exit         *int    `json:",omitempty"`
}

// OverTLSPublicKeyResponse is the answer to GET /key?v=N.
type OverTLSPublicKeyResponse struct {
	LegacyPublicKey key.MachinePublic `json:"legacyPublicKey"`
	PublicKey       key.MachinePublic `json:"publicKey"`
}

// EarlyNoise is the optional JSON the server sends inside the Noise stream
// before HTTP/2 starts.
type EarlyNoise struct {
	NodeKeyChallenge string `json:"nodeKeyChallenge"`
}
