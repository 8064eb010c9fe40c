package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/microlink-go/microlink"
)

// daemon is "microlink up" running: the node (replaced by "up" after a
// "down"), and what serves the host around it.
type daemon struct {
	cfg    microlink.Config
	logger *slog.Logger
	ctx    context.Context // the daemon's life

	mu       sync.Mutex
	n        *microlink.Node
	starting sync.WaitGroup // Starts run by "up" after a "down"

	loggedOut chan struct{} // closed by a successful logout
	logoutOne sync.Once
}

var errDown = errors.New("microlink is down ('microlink up' starts it again)")

func newDaemon(ctx context.Context, cfg microlink.Config, logger *slog.Logger) (*daemon, error) {
	d := &daemon{cfg: cfg, logger: logger, ctx: ctx, loggedOut: make(chan struct{})}
	n, err := d.newNode()
	if err != nil {
		return nil, err
	}
	d.n = n
	return d, nil
}

func (d *daemon) newNode() (*microlink.Node, error) {
	n, err := microlink.New(d.cfg)
	if err != nil {
		return nil, err
	}
	n.Watch(func(ev microlink.Event) {
		if ev.PeersChanged {
			return
		}
		switch {
		case ev.State == microlink.NeedsApproval:
			d.logger.Warn("registered; waiting for an administrator to approve this device in the tailnet's admin console")
		case ev.State == microlink.Connecting && ev.Err != nil:
			d.logger.Warn("cannot reach or use the control server; retrying", "server", n.ControlURL(), "err", ev.Err)
		}
	})
	return n, nil
}

// node returns the current node (closed while the daemon is down).
func (d *daemon) node() *microlink.Node {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.n
}

// up starts a new node after "down"; it does nothing if the node runs.
func (d *daemon) up() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.n.State() != microlink.Stopped {
		return nil
	}
	if d.ctx.Err() != nil {
		return errors.New("shutting down")
	}
	n, err := d.newNode()
	if err != nil {
		return err
	}
	d.n = n
	d.starting.Go(func() {
		if err := n.Start(d.ctx); err != nil && !errors.Is(err, microlink.ErrClosed) && d.ctx.Err() == nil {
			d.logger.Error("up", "err", err)
		}
	})
	d.logger.Info("up: starting again")
	return nil
}

// down disconnects the node from the tailnet; the daemon keeps serving
// its local API, so "up" can bring it back.
func (d *daemon) down() error {
	n := d.node()
	if n.State() == microlink.Stopped {
		return nil
	}
	d.logger.Info("down: leaving the tailnet until 'microlink up'")
	return n.Close()
}

func (d *daemon) logout() error {
	ctx, cancel := context.WithTimeout(d.ctx, 15*time.Second)
	defer cancel()
	if err := d.node().Logout(ctx); err != nil {
		return err
	}
	d.logoutOne.Do(func() { close(d.loggedOut) })
	return nil
}

func (d *daemon) rebind() error {
	if err := d.node().Rebind(); err != nil {
		d.logger.Warn("rebind failed", "err", err)
		return err
	}
	d.logger.Info("rebound: UDP socket reopened, endpoints and DERP connections renewed")
	return nil
}

// Dial dials for the proxies, as tailscaled's userspace proxies do:
// names resolve through the node (MagicDNS, then the tailnet's DNS
// configuration), addresses the tailnet carries are reached through it,
// and others through the host's own network.
func (d *daemon) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	n := d.node()
	if n.State() == microlink.Stopped {
		return nil, errDown
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	ips, err := n.LookupHost(ctx, host)
	if err != nil {
		return nil, err
	}
	var lastErr error
	for _, ip := range ips {
		target := net.JoinHostPort(ip.String(), port)
		c, err := n.Dial(ctx, network, target)
		if errors.Is(err, microlink.ErrNoRoute) {
			var nd net.Dialer
			c, err = nd.DialContext(ctx, network, target)
		}
		if err == nil {
			return c, nil
		}
		lastErr = err
		if ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
}

// close stops the node and waits for background starts.
func (d *daemon) close() {
	d.node().Close()
	d.starting.Wait()
}
