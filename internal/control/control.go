// Package control is microlink's client of the Tailscale control server.
//
// A [Client] logs the node in (with an auth key or interactively), reports
// its disco key, endpoints and home DERP region in "lite" map updates, and
// holds the streaming map poll open, handing every decoded map response to
// the caller. [Client.Run] keeps all of this going.
//
// Like tailscaled, the client logs in only when it must: at the first
// login, when the node key expires or is about to, or when control no
// longer knows the node. Reconnects after a dropped connection, a control
// restart or a network change go straight back to the map poll, so a
// used or expired auth key is never sent again to a server that has the
// node already. After the first success every failure, a refusal
// included, is retried with jittered backoff for as long as Run runs;
// only a refusal of the very first login ends Run.
//
// Dead connections are found within seconds, not minutes: HTTP/2 PINGs
// probe a control connection that has gone quiet while the map poll is
// open, every request has a deadline, and a watchdog restarts a map
// stream that delivers nothing. Applying map responses to a network map is
// the caller's business.
package control

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/microlink-go/microlink/internal/h1"
	"github.com/microlink-go/microlink/internal/key"
	"github.com/microlink-go/microlink/internal/netmap"
	"github.com/microlink-go/microlink/internal/tailcfg"
	"github.com/microlink-go/microlink/internal/ts2021"
)

// CapabilityVersion is the capability version the client advertises.
const CapabilityVersion = tailcfg.CurrentCapabilityVersion

// Kind says what the client is doing or waiting for.
type Kind int

// Client states.
const (
	Connecting       Kind = iota // dialing, registering or polling, not yet with a netmap
	NeedsLogin                   // waiting for the user to visit State.AuthURL
	NeedsMachineAuth             // registered, waiting for an admin to approve the device
	Connected                    // the map poll is up and has delivered the self node
	Error                        // the last attempt failed with State.Err; retrying
)

func (k Kind) String() string {
	switch k {
	case Connecting:
		return "Connecting"
	case NeedsLogin:
		return "NeedsLogin"
	case NeedsMachineAuth:
		return "NeedsMachineAuth"
	case Connected:
		return "Connected"
	case Error:
		return "Error"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// State is the client's state as reported to Options.OnState.
type State struct {
	Kind    Kind
	AuthURL string // for NeedsLogin
	Err     error  // for Error
}

func (s State) String() string {
	switch s.Kind {
	case NeedsLogin:
		return "NeedsLogin(" + s.AuthURL + ")"
	case Error:
		return fmt.Sprintf("Error(%v)", s.Err)
	}
	return s.Kind.String()
}

// Endpoint is a UDP address where the node may be reachable.
type Endpoint struct {
	AddrPort netip.AddrPort
	Type     tailcfg.EndpointType
}

// Pinger runs the pings control asks for (disco, TSMP, ICMP) toward ip.
type Pinger interface {
	Ping(ctx context.Context, ip netip.Addr, pingType string) (*tailcfg.PingResponse, error)
}

// Options configure a Client.
type Options struct {
	ServerURL  string      // control server, e.g. https://controlplane.tailscale.com
	MachineKey key.Private // the Noise static key; required
	NodeKey    key.Private // the WireGuard key; zero means generate one (reported via OnNodeKey)
	AuthKey    string      // pre-authorized key; empty means interactive login
	Hostinfo   *tailcfg.Hostinfo
	Ephemeral  bool
	Logger     *slog.Logger

	// Registered says that control accepted NodeKey in an earlier run (a
	// restart from a stored identity): Run then goes straight to the map
	// poll and logs in only if control turns out not to know the node.
	// Otherwise Run logs in first.
	Registered bool

	// Callbacks, called from the client's goroutines; they must not block
	// for long. OnMapResponse is called for every non-keep-alive message,
	// in order, from one goroutine; the first of each stream carries Node
	// and is a complete state, and OnNewStream is called just before it.
	// Its peers are already decoded into the netmap's compact form.
	OnState       func(State)
	OnNodeKey     func(key.Private)
	OnNewStream   func()
	OnMapResponse func(*netmap.Message)
	// OnReported is called after control accepted a lite update, with the
	// home DERP region and the number of endpoints it now knows for us.
	OnReported func(homeDERP, endpoints int)
	Pinger     Pinger

	// HTTPClient fetches the server key and answers non-Noise pings;
	// nil means a zero h1.Client (system roots).
	HTTPClient *h1.Client
	// MaxMessageSize bounds one compressed map message and, times eight,
	// its decoded JSON, which is also the largest decompression window
	// allowed. Zero means DefaultMaxMessageSize.
	MaxMessageSize int
	// PollTimeout is the map-stream watchdog: the poll is restarted when no
	// message arrives for this long, counted from the request. Zero means
	// DefaultPollTimeout.
	PollTimeout time.Duration
	// PingAfter and PingTimeout govern the liveness check of the
	// connection to control: when a request (such as the map poll) is
	// open and nothing has arrived for PingAfter, an HTTP/2 PING is sent,
	// and if nothing arrives within PingTimeout the connection is
	// dropped and dialed again. Zero means DefaultPingAfter and
	// DefaultPingTimeout.
	PingAfter, PingTimeout time.Duration
}

// Liveness defaults: a black-holed control connection is noticed within
// DefaultPingAfter+DefaultPingTimeout (40 s) of the last message from
// control. Control sends a keep-alive about once a minute (testcontrol
// every 50 to 58 s), and a PING's answer counts as a message too, so an
// idle node sends one PING between two keep-alives (about 100 bytes each
// way with TCP); a PingAfter under half the keep-alive period would send
// two.
const (
	DefaultPingAfter   = 30 * time.Second
	DefaultPingTimeout = 10 * time.Second
)

// DefaultMaxMessageSize is the default bound on one compressed map message:
// the netmap of a tailnet of 50,000 nodes compresses to about 10 MB.
const DefaultMaxMessageSize = 32 << 20

// Client talks to one control server. Create it with New, drive it with
// Run, stop it with Close.
type Client struct {
	opts   Options
	log    *slog.Logger
	hc     *h1.Client
	ctx    context.Context // canceled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // goroutines started outside Run (ping answers)
	kick   chan struct{}  // lite update wanted

	runMu sync.Mutex // held by Run

	registers atomic.Uint64 // register requests sent

	mu            sync.Mutex
	serverKey     key.MachinePublic
	noise         *ts2021.Client
	retired       []*ts2021.Client        // replaced by Rebind; closed when the session ends
	liteCancel    context.CancelCauseFunc // cancels the background lite update in flight
	sessionCancel context.CancelCauseFunc // cancels the session in progress
	rebound       chan struct{}           // signalled by Rebind, cuts a backoff short
	loggedIn      bool                    // control has accepted nodeKey (or is presumed to)
	everUp        bool                    // a login was accepted or a netmap arrived
	loginsSinceUp int                     // logins since the last netmap
	keyExpiry     time.Time               // the self node's key expiry, in control's clock
	health        []string                // control's MapResponse.Health
	display       map[string]tailcfg.DisplayMessage
	nodeKey       key.Private
	tryingKey     key.Private // a new node key not yet accepted
	oldKey        key.Private // the key tryingKey replaces
	rotate        bool        // generate a new node key at the next registration
	lastRotate    time.Time
	authURL       string // pending interactive login
	discoKey      key.DiscoPublic
	endpoints     []Endpoint
	homeDERP      int
	hostinfo      *tailcfg.Hostinfo
	sessionUp     bool // registered and the first lite update is sent
	liteGen       int  // bumped on every change that needs a lite update
	liteSent      int  // the liteGen the last accepted lite update carried
	state         State
	reported      bool // state was reported at least once
	lastPingURL   string
	skew          time.Duration // control's clock minus ours
	closed        bool
}

// RegisterRequests returns how many register requests the client has sent
// (logins, key rotations, interactive follow-ups and logouts).
func (c *Client) RegisterRequests() uint64 { return c.registers.Load() }

// New validates opts and returns a Client.
func New(opts Options) (*Client, error) {
	if opts.ServerURL == "" {
		return nil, errors.New("control: ServerURL is required")
	}
	if opts.MachineKey.IsZero() {
		return nil, errors.New("control: MachineKey is required")
	}
	if _, err := ts2021.NewDialer(opts.ServerURL, opts.MachineKey, key.MachinePublic{}, CapabilityVersion); err != nil {
		return nil, err
	}
	c := &Client{
		opts:     opts,
		log:      opts.Logger,
		hc:       opts.HTTPClient,
		kick:     make(chan struct{}, 1),
		rebound:  make(chan struct{}, 1),
		nodeKey:  opts.NodeKey,
		loggedIn: opts.Registered && !opts.NodeKey.IsZero(),
		state:    State{Kind: Connecting},
	}
	if c.log == nil {
		c.log = discardLogger()
	}
	if c.hc == nil {
		c.hc = &h1.Client{}
	}
	if opts.Hostinfo != nil {
		hi := *opts.Hostinfo
		c.hostinfo = &hi
	} else {
		c.hostinfo = &tailcfg.Hostinfo{OS: "linux", IPNVersion: "microlink"}
	}
	if c.nodeKey.IsZero() {
		c.nodeKey = key.NewPrivate()
		if opts.OnNodeKey != nil {
			opts.OnNodeKey(c.nodeKey)
		}
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c, nil
}

// NodeKey returns the current node key.
func (c *Client) NodeKey() key.Private {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodeKey
}

// State returns the last reported state.
func (c *Client) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

func (c *Client) setState(s State) {
	c.mu.Lock()
	same := c.reported && c.state.Kind == s.Kind && c.state.AuthURL == s.AuthURL && c.state.Err == s.Err
	c.state, c.reported = s, true
	c.mu.Unlock()
	if same {
		return
	}
	c.log.Info("control state", "state", s.String())
	if c.opts.OnState != nil {
		c.opts.OnState(s)
	}
}

// SetDiscoKey sets the disco key reported to control.
func (c *Client) SetDiscoKey(k key.DiscoPublic) {
	c.update(func() bool {
		if c.discoKey == k {
			return false
		}
		c.discoKey = k
		return true
	})
}

// SetEndpoints sets the UDP endpoints reported to control.
func (c *Client) SetEndpoints(eps []Endpoint) {
	c.update(func() bool {
		if slices.Equal(c.endpoints, eps) {
			return false
		}
		c.endpoints = slices.Clone(eps)
		return true
	})
}

// SetPreferredDERP sets the home DERP region reported to control.
func (c *Client) SetPreferredDERP(region int) {
	c.update(func() bool {
		if c.homeDERP == region {
			return false
		}
		c.homeDERP = region
		return true
	})
}

// SetHostinfo replaces the Hostinfo reported to control. Its NetInfo's
// PreferredDERP is overridden by SetPreferredDERP.
func (c *Client) SetHostinfo(hi *tailcfg.Hostinfo) {
	h := *hi
	c.update(func() bool {
		c.hostinfo = &h
		return true
	})
}

// update applies f under the lock and, if it changed something, queues a
// lite update.
func (c *Client) update(f func() bool) {
	c.mu.Lock()
	changed := f()
	if changed {
		c.liteGen++
	}
	c.mu.Unlock()
	if changed {
		c.kickLite()
	}
}

// kickLite wakes the lite updater.
func (c *Client) kickLite() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Close stops Run and every goroutine of the client and closes the
// connection to control.
func (c *Client) Close() error {
	c.cancel()
	c.runMu.Lock() // wait for Run to return
	c.mu.Lock()
	c.closed = true
	nc := c.noise
	c.noise = nil
	c.mu.Unlock()
	c.runMu.Unlock()
	if nc != nil {
		nc.Close()
	}
	c.closeRetired()
	c.wg.Wait()
	return nil
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// errRebind ends a session because Rebind was called.
var errRebind = errors.New("control: network changed; reconnecting")

// Rebind tells the client that the network changed (a new address or
// uplink), so its connection to control may be dead without knowing it yet.
// The client dials control afresh at once: the session in progress (the
// map poll, or a login) is abandoned and started again over a new Noise
// connection, a lite update stuck on the old one is sent again, and a
// backoff after failures is cut short. The node does not log in again
// because of it; the new map poll brings a complete netmap.
func (c *Client) Rebind() {
	c.mu.Lock()
	if c.noise != nil {
		c.retired = append(c.retired, c.noise)
		c.noise = nil
	}
	lite, session := c.liteCancel, c.sessionCancel
	c.mu.Unlock()
	if lite != nil {
		lite(errRebind)
	}
	if session != nil {
		session(errRebind)
	}
	select {
	case c.rebound <- struct{}{}:
	default:
	}
}

// closeRetired closes the connections Rebind replaced.
func (c *Client) closeRetired() {
	c.mu.Lock()
	old := c.retired
	c.retired = nil
	c.mu.Unlock()
	for _, nc := range old {
		nc.Close()
	}
}
