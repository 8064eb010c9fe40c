package microlink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/microlink-go/microlink/internal/control"
	"github.com/microlink-go/microlink/internal/dns"
	"github.com/microlink-go/microlink/internal/key"
	"github.com/microlink-go/microlink/internal/netmap"
	"github.com/microlink-go/microlink/internal/netmon"
	"github.com/microlink-go/microlink/internal/router"
	"github.com/microlink-go/microlink/internal/state"
	"github.com/microlink-go/microlink/internal/tailcfg"
	"github.com/microlink-go/microlink/internal/tun"
	"github.com/microlink-go/microlink/internal/tunnel"
)

// Node is a tailnet node. Create one with New, connect it with Start and
// stop it with Close. Its methods are safe for concurrent use.
type Node struct {
	cfg    Config
	logger *slog.Logger
	store  *state.Store // nil when StateDir is empty
	ident  *state.Identity
	disco  key.Private // fresh at every start

	nm       *netmap.Map
	dns      *dns.Resolver   // MagicDNS
	dnsCtx   context.Context // canceled by Close, for in-process resolver connections
	dnsStop  context.CancelFunc
	dnsConns sync.WaitGroup
	stack    *tunnel.Stack             // the node's IP endpoint, from Start to Close
	tun      *tunMode                  // the TUN device and host routing, in TUN mode
	relay    *router.Relay             // the subnet router of userspace mode, or nil
	data     *dataPlane                // WireGuard and magicsock for the current node key
	current  atomic.Pointer[dataPlane] // data, for the stack's send path
	ctl      *control.Client
	netmon   *netmon.Monitor // rebinds after network changes; nil if it failed

	mapUpdates atomic.Uint64 // map messages applied

	mu        sync.Mutex
	st        State
	authURL   string
	lastErr   error
	changed   chan struct{} // closed and replaced at every state change
	events    eventQueue    // for Watch
	started   bool
	gotMap    bool // a map message was applied
	newStream bool // the next map message starts a new stream

	retired      Stats        // counters of data planes replaced at key rotations
	ctlKind      control.Kind // the control client's last state
	reportedDERP int          // home DERP region control has accepted from us
	homeUp       int          // home DERP region whose connection is up
	graceOver    bool         // stopped waiting for reportedDERP
	graceTimer   *time.Timer
	cacheTimer   *time.Timer // pending peer-cache save
	expiryTimer  *time.Timer // fires at the next peer key expiry
	keyWarnTimer *time.Timer // fires when the node key's expiry warning starts
	keyWarned    time.Time   // the node key expiry last warned about
	keyLogged    time.Time   // the node key expiry last logged
	identNew     bool        // the identity was created by New, not loaded
	closed       bool
	cancel       context.CancelFunc
	done         chan struct{} // closed when the control loop has returned
}

// New validates cfg, applies defaults and loads the node's identity from
// cfg.StateDir, creating one if there is none. It does not touch the network.
func New(cfg Config) (*Node, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if cfg.TUN != "" {
		// Refuse before anything on the host changes.
		if err := tun.CheckAccess(); err != nil {
			return nil, fmt.Errorf("microlink: %w", err)
		}
	}
	n := &Node{
		cfg:     cfg,
		logger:  cfg.Logger,
		changed: make(chan struct{}),
	}
	if cfg.StateDir != "" {
		n.store, err = state.Open(cfg.StateDir, n.logger)
		if err != nil {
			return nil, publicErr(fmt.Errorf("microlink: %w", err))
		}
		var created bool
		n.ident, created, err = n.store.IdentityFor(cfg.ControlURL, cfg.FreshIdentity)
		var me *state.ControlMismatchError
		if errors.As(err, &me) {
			return nil, &ControlMismatchError{StateDir: cfg.StateDir, StateURL: me.Stored, ControlURL: me.Configured}
		}
		if err != nil {
			return nil, publicErr(fmt.Errorf("microlink: %w", err))
		}
		n.identNew = created
		if created {
			n.logger.Info("microlink: created a new identity", "dir", cfg.StateDir)
		}
	} else {
		n.ident = state.NewIdentity()
		n.ident.ControlURL = cfg.ControlURL
		n.identNew = true
	}
	n.nm = netmap.New(netmap.Options{Logger: n.logger})
	n.dns = n.newResolver()
	n.dnsCtx, n.dnsStop = context.WithCancel(context.Background())
	return n, nil
}

// ControlURL returns the control server the node uses.
func (n *Node) ControlURL() string { return n.cfg.ControlURL }

// StateDir returns the directory holding the node's identity, or "".
func (n *Node) StateDir() string { return n.cfg.StateDir }

// State returns the node's current state.
func (n *Node) State() State {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.st
}

// WaitState blocks until the node is in state want, the node stops, or ctx
// ends.
func (n *Node) WaitState(ctx context.Context, want State) error {
	for {
		n.mu.Lock()
		st, ch, closed := n.st, n.changed, n.closed
		n.mu.Unlock()
		if st == want {
			return nil
		}
		if closed {
			return ErrClosed
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (n *Node) setState(st State, authURL string, err error) {
	n.mu.Lock()
	if n.closed && st != Stopped {
		n.mu.Unlock()
		return
	}
	same := n.st == st && n.authURL == authURL && errors.Is(err, n.lastErr) && errors.Is(n.lastErr, err)
	n.st, n.authURL, n.lastErr = st, authURL, err
	if same {
		n.mu.Unlock()
		return
	}
	close(n.changed)
	n.changed = make(chan struct{})
	ev := Event{State: st, AuthURL: authURL, Err: publicErr(err)}
	if st == Stopped {
		n.mu.Unlock()
		n.logger.Info("microlink: state", "state", st.String())
		n.events.close(ev)
		return
	}
	// Queued under n.mu, so that events are in the order of the changes.
	n.events.push(ev)
	n.mu.Unlock()
	n.logger.Info("microlink: state", "state", st.String())
}

func (n *Node) notifyPeers() {
	n.mu.Lock()
	n.events.push(Event{State: n.st, AuthURL: n.authURL, Err: publicErr(n.lastErr), PeersChanged: true})
	n.mu.Unlock()
}

func (n *Node) hostinfo() *tailcfg.Hostinfo {
	return &tailcfg.Hostinfo{
		IPNVersion:  VersionString(),
		OS:          runtime.GOOS,
		App:         "microlink",
		Hostname:    n.cfg.Hostname,
		GoArch:      runtime.GOARCH,
		GoVersion:   runtime.Version(),
		RequestTags: n.cfg.Tags,
		Userspace:   tailcfg.NewOptBool(n.cfg.TUN == ""),
		ShieldsUp:   n.cfg.ShieldsUp,
		RoutableIPs: n.cfg.AdvertiseRoutes,
	}
}

// IPv4 returns the node's tailnet IPv4 address, or the zero Addr before the
// first netmap.
func (n *Node) IPv4() netip.Addr { return n.addr(netip.Addr.Is4) }

// IPv6 returns the node's tailnet IPv6 address, or the zero Addr.
func (n *Node) IPv6() netip.Addr { return n.addr(netip.Addr.Is6) }

func (n *Node) addr(is func(netip.Addr) bool) netip.Addr {
	self, ok := n.nm.Self()
	if !ok {
		return netip.Addr{}
	}
	for _, p := range self.Addresses {
		if is(p.Addr()) {
			return p.Addr()
		}
	}
	return netip.Addr{}
}
