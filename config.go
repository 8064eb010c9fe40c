package microlink

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/microlink-go/microlink/internal/tcp"
)

// Defaults used when a Config field is left empty.
const (
	// DefaultControlURL is Tailscale's hosted control plane.
	DefaultControlURL = "https://controlplane.tailscale.com"
	// DefaultPort is the UDP port microlink listens on for WireGuard, disco
	// and STUN. When it is busy, any free port is used instead.
	DefaultPort = 41641
)

// Config configures a Node. The zero value is usable given an AuthKey (or an
// interactive login) and a StateDir; New applies the defaults below. New
// does not read the environment: a program that wants the TS_* variables
// the microlink CLI honours calls ApplyEnv first.
type Config struct {
	// AuthKey is a pre-authorized key ("tskey-auth-…" on Tailscale, or a
	// Headscale pre-auth key). Empty means an interactive login: the node
	// reports the login URL through OnAuthURL and the log.
	AuthKey string

	// Hostname is the node's name in the tailnet. Empty means the operating
	// system's host name.
	Hostname string

	// ControlURL is the control server: Tailscale's (the default) or a
	// Headscale server. Empty means DefaultControlURL.
	ControlURL string

	// StateDir holds the node's identity (machine and node keys) and a cache
	// of known peers. Empty means the identity lives only in memory and a
	// new node is created at every start.
	StateDir string

	// FreshIdentity allows a start with a ControlURL other than the one
	// the identity in StateDir is registered with: that identity and its
	// tailnet's peer cache are discarded and a new identity is made.
	// Without it, such a start fails with a *ControlMismatchError. An
	// identity of the configured server is kept either way.
	FreshIdentity bool

	// Port is the local UDP port. 0 means DefaultPort (with
	// fallback to any free port). -1 means any free port.
	Port int

	// Ephemeral asks control to remove the node soon after it goes offline.
	Ephemeral bool

	// Tags are ACL tags the node asks to carry (for tagged auth keys).
	Tags []string

	// ShieldsUp refuses every connection and packet that peers start
	// toward this node, whatever the tailnet's ACL allows; answers to the
	// node's own traffic still come in. Control is told, as by "tailscale
	// up --shields-up".
	ShieldsUp bool

	// OnAuthURL, if set, is called with the URL a person must visit to
	// authorize the node during an interactive login.
	OnAuthURL func(url string)

	// AcceptRoutes makes the node use the subnet routes other nodes
	// offer and control approved, like "tailscale up --accept-routes".
	// Without it WireGuard carries only the peers' own tailnet
	// addresses (and the exit node's traffic): packets to and from the
	// networks behind subnet routers are dropped.
	AcceptRoutes bool

	// ExitNode names the peer, by MagicDNS name or tailnet IP address,
	// through which traffic to addresses outside the tailnet leaves,
	// like "tailscale up --exit-node". The peer must offer itself as an
	// exit node and control must approve it. While it is not in the
	// netmap such traffic is dropped rather than sent another way.
	// Empty means no exit node: dials and sends to addresses outside
	// the tailnet fail with an error wrapping ErrNoRoute.
	ExitNode string

	// ExitNodeAllowLANAccess keeps the networks the host is directly
	// attached to reachable outside the tunnel while an exit node is in
	// use (TUN mode), like "--exit-node-allow-lan-access".
	ExitNodeAllowLANAccess bool

	// AdvertiseRoutes are the networks this node offers to route for
	// the tailnet ("tailscale up --advertise-routes"), reported to
	// control, which must approve them before peers use them. 0.0.0.0/0
	// and ::/0 together offer the node as an exit node. In TUN mode the
	// host's kernel forwards the traffic; in userspace mode the node
	// relays TCP, UDP and ICMP echo through the host's own sockets. See
	// the README.
	AdvertiseRoutes []netip.Prefix

	// TUN, if not empty, runs the node in TUN mode (Linux, root or
	// CAP_NET_ADMIN) with a TUN device of that name ("microlink0" is
	// the CLI's default): the host's own programs reach the tailnet
	// through the kernel, and the kernel owns the node's tailnet
	// addresses. Empty means userspace mode: only the Node's own
	// sockets use the tailnet. See the README for what the API does in
	// TUN mode.
	TUN string

	// AcceptDNS, in TUN mode, points the host's resolver at MagicDNS
	// (100.100.100.100) once the node is in the tailnet, with the
	// tailnet's search domain, like "tailscale up --accept-dns", and
	// puts the host's configuration back when the node closes (or, after
	// a killed run, when the next one starts). It goes through
	// systemd-resolved where that owns /etc/resolv.conf, and otherwise
	// rewrites the file, keeping the original in StateDir. Off by
	// default, unlike tailscaled's: see the README.
	AcceptDNS bool

	// NoSNAT, in TUN mode, forwards traffic from the tailnet to
	// advertised routes with its tailnet source addresses kept, instead
	// of rewriting them to the host's own address on the way out
	// ("--snat-subnet-routes=false"); the hosts on those networks then
	// need a route back to the tailnet through this node.
	NoSNAT bool

	// TCP tunes the node's TCP connections (Node.ListenTCP, Node.DialTCP).
	// The zero value means the defaults.
	TCP TCPConfig

	// Logger receives the node's logs. Nil means slog.Default().
	Logger *slog.Logger
}

// TCPConfig tunes the node's TCP. A zero field means its default.
type TCPConfig struct {
	// MaxConns bounds the node's TCP connections in every state but
	// TIME-WAIT, including those a listener has not accepted yet: 256.
	// An idle connection holds no buffers and costs about 2 KiB. An
	// eighth of them are kept for DialTCP, so that peers connecting (or a
	// SYN flood) cannot take them all.
	MaxConns int

	// SendBuffer and ReceiveBuffer are the largest send and receive
	// buffers of a connection, from 4 KiB to 64 MiB: 4 MiB. Buffers start
	// at 64 KiB and grow with the bandwidth-delay product the connection
	// measures; they hold memory only for the data in them, and shrink
	// back when the connection is idle. A connection receives at most
	// about ReceiveBuffer per round trip.
	SendBuffer, ReceiveBuffer int

	// MemoryLimit bounds how far the buffers of all connections together
	// grow beyond the 64 KiB each starts with: 16 MiB. Buffers grow only
	// while there is room.
	MemoryLimit int

	// KeepAlive is how long an established connection may hear nothing
	// from its peer before it sends keep-alive probes: 60 s. Four probes
	// 15 s apart go unanswered before the connection fails. Negative
	// turns keep-alives off. Conn.SetKeepAlive and SetKeepAlivePeriod
	// change it for one connection.
	KeepAlive time.Duration

	// RetransmitTimeout is how long sent data may go unacknowledged
	// while it is retransmitted before the connection fails: 15 minutes,
	// about what Linux takes.
	RetransmitTimeout time.Duration

	// CongestionControl is "cubic" (the default) or "newreno".
	CongestionControl string
}

// Bounds of TCPConfig.
const (
	maxTCPConns     = 4096
	minTCPBuffer    = tcp.MinBuffer
	maxTCPBuffer    = tcp.MaxBuffer
	tcpBufferBounds = "4 KiB to 64 MiB"
	minTCPMemory    = 256 << 10
)

func (c TCPConfig) validate() error {
	if c.MaxConns < 0 || c.MaxConns > maxTCPConns {
		return fmt.Errorf("microlink: TCP.MaxConns %d out of range (0 for the default, up to %d)", c.MaxConns, maxTCPConns)
	}
	for _, b := range []struct {
		name string
		size int
	}{{"SendBuffer", c.SendBuffer}, {"ReceiveBuffer", c.ReceiveBuffer}} {
		if b.size != 0 && (b.size < minTCPBuffer || b.size > maxTCPBuffer) {
			return fmt.Errorf("microlink: TCP.%s %d out of range (0 for the default, or %s)", b.name, b.size, tcpBufferBounds)
		}
	}
	if c.MemoryLimit != 0 && c.MemoryLimit < minTCPMemory {
		return fmt.Errorf("microlink: TCP.MemoryLimit %d out of range (0 for the default, or at least 256 KiB)", c.MemoryLimit)
	}
	if c.RetransmitTimeout < 0 {
		return fmt.Errorf("microlink: TCP.RetransmitTimeout %v is negative", c.RetransmitTimeout)
	}
	switch c.CongestionControl {
	case "", "cubic", "newreno":
	default:
		return fmt.Errorf("microlink: TCP.CongestionControl %q is neither \"cubic\" nor \"newreno\"", c.CongestionControl)
	}
	return nil
}

// stackConfig returns the settings of the node's TCP stack.
func (c TCPConfig) stackConfig() tcp.Config {
	return tcp.Config{
		MaxConns:          c.MaxConns,
		SendBuffer:        c.SendBuffer,
		ReceiveBuffer:     c.ReceiveBuffer,
		MemoryLimit:       c.MemoryLimit,
		KeepAliveIdle:     c.KeepAlive,
		RetransmitTimeout: c.RetransmitTimeout,
		CongestionControl: c.CongestionControl,
	}
}

// ApplyEnv fills the fields of c that are empty (Port: 0) from the
// environment variables the microlink CLI reads, as tailscale's tools name
// them: TS_AUTHKEY, TS_HOSTNAME, TS_CONTROL_URL, TS_STATE_DIR and TS_PORT.
// Fields already set win. It fails only for a TS_PORT that is not a
// number. New never reads the environment itself, so a library program
// does so only if it calls ApplyEnv.
func (c *Config) ApplyEnv() error {
	env := func(dst *string, name string) {
		if *dst == "" {
			*dst = strings.TrimSpace(os.Getenv(name))
		}
	}
	env(&c.AuthKey, "TS_AUTHKEY")
	env(&c.Hostname, "TS_HOSTNAME")
	env(&c.ControlURL, "TS_CONTROL_URL")
	env(&c.StateDir, "TS_STATE_DIR")
	if c.Port == 0 {
		if s := strings.TrimSpace(os.Getenv("TS_PORT")); s != "" {
			p, err := strconv.Atoi(s)
			if err != nil {
				return fmt.Errorf("microlink: TS_PORT=%q is not a port number", s)
			}
			c.Port = p
		}
	}
	return nil
}

// withDefaults returns a copy of c with the defaults applied, or an error
// naming the first invalid field.
func (c Config) withDefaults() (Config, error) {
	if c.Hostname == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "microlink"
		}
		c.Hostname = h
	}
	if c.ControlURL == "" {
		c.ControlURL = DefaultControlURL
	}
	if c.Port == 0 {
		c.Port = DefaultPort
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, c.validate()
}

func (c Config) validate() error {
	u, err := url.Parse(c.ControlURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("microlink: control URL %q must be http:// or https:// with a host", c.ControlURL)
	}
	if c.Port < -1 || c.Port > 65535 {
		return fmt.Errorf("microlink: port %d out of range (0-65535, or -1 for any)", c.Port)
	}
	if err := validHostname(c.Hostname); err != nil {
		return err
	}
	if err := c.TCP.validate(); err != nil {
		return err
	}
	if err := c.validateRoutes(); err != nil {
		return err
	}
	if err := c.validateTUN(); err != nil {
		return err
	}
	if err := c.validateDNS(); err != nil {
		return err
	}
	for _, t := range c.Tags {
		if !strings.HasPrefix(t, "tag:") || len(t) == len("tag:") {
			return fmt.Errorf("microlink: tag %q must look like tag:name", t)
		}
	}
	return nil
}

// ControlMismatchError is returned by New when the identity in the state
// directory is registered with another control server than
// Config.ControlURL.
type ControlMismatchError struct {
	StateDir   string
	StateURL   string // the control server the identity belongs to
	ControlURL string // Config.ControlURL
}

func (e *ControlMismatchError) Error() string {
	return fmt.Sprintf("microlink: the identity in %s is registered with control server %s, not %s "+
		"(use that server, another state directory, or Config.FreshIdentity to replace the identity with a new one)",
		e.StateDir, e.StateURL, e.ControlURL)
}

func validHostname(h string) error {
	if len(h) > 63 {
		return errors.New("microlink: hostname longer than 63 characters")
	}
	for _, r := range h {
		if r <= ' ' || r == '/' || r == 0x7f {
			return fmt.Errorf("microlink: hostname %q contains %q", h, r)
		}
	}
	return nil
}
