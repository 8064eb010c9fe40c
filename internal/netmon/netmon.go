// Package netmon notices when the host's network changes in a way that
// matters to a node: an interface comes up or goes down, an address is
// added or removed, the default route moves. It then calls
// Options.OnChange once, after the burst of events such a change makes
// has settled, so that the node can reopen its sockets and report its new
// endpoints (a rebind).
//
// What counts is a [State]: the interfaces that are up and running with
// their usable addresses (not loopback, link-local or multicast), and the
// default routes of the main routing table. Events that leave the State as
// it was (an address's lifetime refreshed, a route to some other network,
// an interface that is down or has no address) are not changes, and
// interfaces for which Options.Ignore returns true (the node's own TUN
// device) are left out of the State altogether.
//
// On Linux the monitor listens to rtnetlink (links, addresses, routes)
// and looks at the State only when the kernel reports something; on other
// systems, or when the netlink socket cannot be opened, it looks every
// Options.PollInterval.
package netmon

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of Options.
const (
	// DefaultQuiet is how long the events of one change must have stopped
	// before the State is looked at.
	DefaultQuiet = 500 * time.Millisecond
	// DefaultMaxDelay bounds the wait for quiet during a long burst.
	DefaultMaxDelay = 3 * time.Second
	// DefaultPollInterval is how often the State is looked at where
	// there is no netlink.
	DefaultPollInterval = 10 * time.Second
)

// Options configure a Monitor.
type Options struct {
	// OnChange is called after each change of the State, with the old
	// and the new one, from the monitor's goroutine: calls do not
	// overlap, and Close waits for a call in progress.
	OnChange func(old, new State)

	// Ignore, if set, reports interfaces to leave out of the State, given
	// their name and usable addresses: the node's own TUN device, or
	// another VPN's.
	Ignore func(name string, addrs []netip.Prefix) bool

	// Quiet, MaxDelay and PollInterval replace DefaultQuiet,
	// DefaultMaxDelay and DefaultPollInterval when not zero.
	Quiet, MaxDelay, PollInterval time.Duration

	// Poll makes the monitor poll even where netlink is available.
	Poll bool

	// Logger receives the monitor's logs; nil discards them.
	Logger *slog.Logger
}

// Monitor watches the host's network. Create it with New, stop it with
// Close.
type Monitor struct {
	opts Options
	log  *slog.Logger
	stop chan struct{}
	wg   sync.WaitGroup

	closeOnce sync.Once
	closeFn   func() // stops the watcher; nil when polling

	checks atomic.Int64 // looks at the State after events, for tests

	mu    sync.Mutex
	state State
}

// New takes a first look at the network and starts watching it.
func New(opts Options) (*Monitor, error) {
	if opts.OnChange == nil {
		return nil, errors.New("netmon: no OnChange function")
	}
	opts.Quiet = cmp.Or(opts.Quiet, DefaultQuiet)
	opts.MaxDelay = cmp.Or(opts.MaxDelay, DefaultMaxDelay)
	opts.PollInterval = cmp.Or(opts.PollInterval, DefaultPollInterval)
	m := &Monitor{opts: opts, log: opts.Logger, stop: make(chan struct{})}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	st, err := m.snapshot()
	if err != nil {
		return nil, fmt.Errorf("netmon: %w", err)
	}
	m.state = st
	if !opts.Poll {
		w, err := newWatcher()
		if err == nil && w != nil {
			m.closeFn = func() { w.close() }
			m.wg.Add(1)
			go func() {
				defer m.wg.Done()
				if err := m.watch(w); err != nil {
					m.log.Warn("netmon: netlink failed; polling instead", "err", err)
					m.poll()
				}
			}()
			return m, nil
		}
		if err != nil {
			m.log.Info("netmon: no netlink; polling", "err", err, "every", opts.PollInterval)
		}
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.poll()
	}()
	return m, nil
}

// Close stops the monitor and waits for its goroutine to return.
func (m *Monitor) Close() error {
	m.closeOnce.Do(func() {
		close(m.stop)
		if m.closeFn != nil {
			m.closeFn()
		}
	})
	m.wg.Wait()
	return nil
}

// State returns the State the monitor saw last.
func (m *Monitor) State() State {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state
}

// poll looks at the State every PollInterval until Close.
func (m *Monitor) poll() {
	t := time.NewTicker(m.opts.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
			m.check()
		}
	}
}

// watcher delivers the kernel's network events.
type watcher interface {
	// wait blocks until the kernel reports something or deadline passes
	// (zero: no deadline). It reports whether what came may change the
	// State, or that the deadline passed; errClosed after close.
	wait(deadline time.Time) (relevant, timedOut bool, err error)
	close()
}

var errClosed = errors.New("netmon: closed")

// watch waits for events and looks at the State once they have been quiet
// for Quiet (or MaxDelay after the first). It returns nil after Close, or
// the error that stopped the watcher.
func (m *Monitor) watch(w watcher) error {
	var first time.Time // of the pending burst; zero when there is none
	for {
		var deadline time.Time
		if !first.IsZero() {
			deadline = time.Now().Add(m.opts.Quiet)
			if last := first.Add(m.opts.MaxDelay); deadline.After(last) {
				deadline = last
			}
		}
		relevant, timedOut, err := w.wait(deadline)
		select {
		case <-m.stop:
			return nil
		default:
		}
		switch {
		case err != nil:
			return err
		case relevant && first.IsZero():
			first = time.Now()
		case timedOut && !first.IsZero():
			first = time.Time{}
			m.check()
		}
	}
}

// check compares the State with the last one and reports a change.
func (m *Monitor) check() {
	m.checks.Add(1)
	st, err := m.snapshot()
	if err != nil {
		m.log.Warn("netmon: reading the network state", "err", err)
		return
	}
	m.mu.Lock()
	old := m.state
	same := old.Equal(st)
	m.state = st
	m.mu.Unlock()
	if same {
		return
	}
	m.log.Debug("netmon: network changed", "change", old.Diff(st))
	m.opts.OnChange(old, st)
}

// State is the part of the host's network configuration that decides how
// a node reaches its peers.
type State struct {
	// Interfaces maps the name of every interface that is up and running
	// and has a usable address to those addresses, sorted.
	Interfaces map[string][]netip.Prefix
	// DefaultRoutes are the default routes of the main routing table,
	// sorted (Linux only).
	DefaultRoutes []Route
}

// Route is a default route.
type Route struct {
	Gateway   netip.Addr // zero for a route straight onto a link
	Interface string
	Metric    uint32
}

func (r Route) String() string {
	var b strings.Builder
	b.WriteString("default")
	if r.Gateway.IsValid() {
		b.WriteString(" via " + r.Gateway.String())
	}
	b.WriteString(" dev " + r.Interface)
	if r.Metric != 0 {
		fmt.Fprintf(&b, " metric %d", r.Metric)
	}
	return b.String()
}

func compareRoutes(a, b Route) int {
	if c := a.Gateway.Compare(b.Gateway); c != 0 {
		return c
	}
	if c := strings.Compare(a.Interface, b.Interface); c != 0 {
		return c
	}
	return cmp.Compare(a.Metric, b.Metric)
}

func comparePrefixes(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}

// sortUnique sorts a short list in place and drops repeats. (The lists
// are a handful of entries: an insertion sort is smaller in the binary
// than a generic sort's instantiation.)
func sortUnique[T comparable](s []T, compare func(a, b T) int) []T {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && compare(s[j], s[j-1]) < 0; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	out := s[:0]
	for _, v := range s {
		if len(out) == 0 || v != out[len(out)-1] {
			out = append(out, v)
		}
	}
	return out
}

// Equal reports whether s and o are the same.
func (s State) Equal(o State) bool {
	return maps.EqualFunc(s.Interfaces, o.Interfaces, slices.Equal) && slices.Equal(s.DefaultRoutes, o.DefaultRoutes)
}

// Diff describes how o differs from s, for logs.
func (s State) Diff(o State) string {
	var parts []string
	names := slices.Collect(maps.Keys(s.Interfaces))
	for n := range o.Interfaces {
		if _, ok := s.Interfaces[n]; !ok {
			names = append(names, n)
		}
	}
	slices.SortFunc(names, strings.Compare) // the sort encoding/json links already
	for _, n := range names {
		was, is := s.Interfaces[n], o.Interfaces[n]
		var ch []string
		for _, p := range is {
			if !slices.Contains(was, p) {
				ch = append(ch, "+"+p.String())
			}
		}
		for _, p := range was {
			if !slices.Contains(is, p) {
				ch = append(ch, "-"+p.String())
			}
		}
		if len(ch) > 0 {
			parts = append(parts, n+" "+strings.Join(ch, " "))
		}
	}
	if !slices.Equal(s.DefaultRoutes, o.DefaultRoutes) {
		parts = append(parts, fmt.Sprintf("routes %v → %v", s.DefaultRoutes, o.DefaultRoutes))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, "; ")
}

// usable reports whether a is an address peers might reach the host at,
// or one that routes traffic to them.
func usable(a netip.Addr) bool {
	return a.IsValid() && !a.IsLoopback() && !a.IsLinkLocalUnicast() && !a.IsMulticast() && !a.IsUnspecified()
}

// snapshot reads the current State.
func (m *Monitor) snapshot() (State, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return State{}, err
	}
	st := State{Interfaces: make(map[string][]netip.Prefix)}
	names := make(map[int]string, len(ifs)) // of interfaces in the State
	for _, ifi := range ifs {
		if ifi.Flags&net.FlagUp == 0 || ifi.Flags&net.FlagRunning == 0 || ifi.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := ifi.Addrs()
		if err != nil {
			continue // gone meanwhile
		}
		var ps []netip.Prefix
		for _, a := range addrs {
			in, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(in.IP)
			if !ok || !usable(ip.Unmap()) {
				continue
			}
			bits, _ := in.Mask.Size()
			ps = append(ps, netip.PrefixFrom(ip.Unmap(), bits))
		}
		if len(ps) == 0 {
			continue
		}
		ps = sortUnique(ps, comparePrefixes)
		if m.opts.Ignore != nil && m.opts.Ignore(ifi.Name, ps) {
			continue
		}
		st.Interfaces[ifi.Name] = ps
		names[ifi.Index] = ifi.Name
	}
	routes, err := defaultRoutes()
	if err != nil {
		return State{}, err
	}
	for _, r := range routes {
		name, ok := names[r.index]
		if !ok {
			continue // through an ignored interface, or one that is down
		}
		st.DefaultRoutes = append(st.DefaultRoutes, Route{Gateway: r.gateway, Interface: name, Metric: r.metric})
	}
	st.DefaultRoutes = sortUnique(st.DefaultRoutes, compareRoutes)
	return st, nil
}

// osRoute is a default route as the OS lists it.
type osRoute struct {
	index   int // interface index
	gateway netip.Addr
	metric  uint32
}
