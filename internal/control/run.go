package control

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"sync"
	"time"
)

// errRotateKey ends a session so that the next one registers a new node
// key.
var errRotateKey = errors.New("control: node key about to expire")

// Run keeps the node logged in and the map poll open until ctx is done or
// Close is called, reconnecting with jittered exponential backoff (or as a
// rate limit asks). It logs in only when it must (see the package
// documentation); every failure after the first successful login or netmap
// is retried, and State reports the last one. Run returns ctx's error,
// ErrClosed after Close, or a *RegisterError when control refuses the very
// first login (a bad auth key, for example).
func (c *Client) Run(ctx context.Context) error {
	if !c.runMu.TryLock() {
		return errors.New("control: Run already running")
	}
	defer c.runMu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(c.ctx, cancel)
	defer stop()

	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() { c.liteUpdater(ctx) })

	maxSize := c.opts.MaxMessageSize
	if maxSize <= 0 {
		maxSize = DefaultMaxMessageSize
	}
	mr := newMessageReader(maxSize) // one decoder for every poll
	defer mr.close()

	done := func() error {
		if c.ctx.Err() != nil {
			return ErrClosed
		}
		return ctx.Err()
	}
	c.setState(State{Kind: Connecting})
	var bo backoff
	for {
		start := time.Now()
		connected, err := c.session(ctx, mr)
		c.closeRetired() // the session that kept them is over
		c.mu.Lock()
		c.sessionUp = false
		c.mu.Unlock()
		if ctx.Err() != nil {
			return done()
		}
		if connected {
			bo.reset()
		}
		if errors.Is(err, errRotateKey) || errors.Is(err, errRebind) {
			c.log.Info("control: reconnecting", "reason", err)
			continue
		}
		var re *RegisterError
		if errors.As(err, &re) && !c.wasUp() {
			c.setState(State{Kind: Error, Err: err})
			return err
		}
		if c.lostNode(err) {
			c.log.Warn("control: the server does not know this node; logging in again", "err", err)
			continue
		}
		var delay time.Duration
		var rl *RateLimitError
		switch {
		case errors.As(err, &rl):
			delay = rl.RetryAfter
		case timedOut(err):
			// Nothing answered (a dial or a request into a black hole):
			// the attempt was its own wait, and a server that comes back
			// is best found by the next attempt starting now.
			delay = rand.N(time.Second)
		default:
			// Attempts start at most once per backoff step.
			delay = max(bo.next()-time.Since(start), 0)
		}
		if !connected {
			// Nothing worked: maybe the server key changed.
			c.forgetServer()
		}
		c.log.Info("control: session ended; retrying", "err", err, "delay", delay.Round(time.Millisecond))
		c.setState(State{Kind: Error, Err: err})
		if rl == nil {
			err = c.sleepOrRebind(ctx, delay)
		} else {
			err = sleep(ctx, delay)
		}
		if err != nil {
			return done()
		}
	}
}

// timedOut reports whether err is a timeout: a dial, read or request that
// met its deadline without an answer.
func timedOut(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// ErrClosed is returned by Run after Close.
var ErrClosed = errors.New("control: client closed")

// wasUp reports whether a login was ever accepted or a netmap received.
func (c *Client) wasUp() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.everUp
}

// unknownNode reports whether err is control saying that it does not know
// the node: a 4xx answer to a lite update or the map poll (testcontrol says
// 400 and Headscale 404 "node not found").
func unknownNode(err error) bool {
	var he *HTTPError
	return errors.As(err, &he) && he.Op != "register" && he.Status >= 400 && he.Status <= 499 && he.Status != 408
}

// lostNode reports whether err means that control no longer knows the node
// (see unknownNode), and if so arranges a new login for the next session.
// It does so at most once between netmaps, so that a server answering 4xx
// for another reason is not sent a login after every backoff.
func (c *Client) lostNode(err error) bool {
	if !unknownNode(err) {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.loggedIn || c.loginsSinceUp > 0 {
		return false
	}
	c.loggedIn = false
	return true
}

// sleepOrRebind waits for d, ctx or a Rebind.
func (c *Client) sleepOrRebind(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-c.rebound:
		c.log.Info("control: network changed; retrying now")
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// session logs in if needed, sends a lite update and runs the map poll. It
// reports whether the poll delivered a netmap. Rebind cancels it with
// errRebind.
func (c *Client) session(ctx context.Context, mr *messageReader) (connected bool, err error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	c.mu.Lock()
	c.sessionCancel = cancel
	needLogin := !c.loggedIn || c.rotate || !c.tryingKey.IsZero()
	c.mu.Unlock()
	select {
	case <-c.rebound: // this session dials afresh anyway
	default:
	}
	defer func() {
		c.mu.Lock()
		c.sessionCancel = nil
		c.mu.Unlock()
		if context.Cause(ctx) == errRebind {
			err = errRebind
		}
	}()

	if needLogin {
		if err := c.login(ctx); err != nil {
			return false, err
		}
	}
	if err := c.sendLiteUpdate(ctx); err != nil {
		return false, err
	}
	c.mu.Lock()
	c.sessionUp = true
	behind := c.liteGen != c.liteSent // changed while the update was on its way
	c.mu.Unlock()
	if behind {
		c.kickLite()
	}
	return c.poll(ctx, mr)
}

// liteUpdater sends a lite update whenever something reported changes
// while a session is up, retrying with backoff.
func (c *Client) liteUpdater(ctx context.Context) {
	var bo backoff
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.kick:
		}
		for {
			c.mu.Lock()
			up, behind := c.sessionUp, c.liteGen != c.liteSent
			c.mu.Unlock()
			if !up || !behind {
				break // a session starting sends everything, and kicks us if it falls behind
			}
			err := c.backgroundLiteUpdate(ctx)
			if err == nil {
				bo.reset()
				continue // something may have changed meanwhile
			}
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, errRebind) {
				continue // again at once, over the new connection
			}
			if unknownNode(err) {
				// Control lost the node while its map stream goes on
				// (Headscale keeps a deleted node's stream open): end
				// the session, and Run logs in again.
				c.mu.Lock()
				session := c.sessionCancel
				c.mu.Unlock()
				if session != nil {
					session(err)
				}
			}
			delay := bo.next()
			var rl *RateLimitError
			if errors.As(err, &rl) {
				delay = rl.RetryAfter
			}
			c.log.Info("control: lite update failed", "err", err, "retry", delay)
			if sleep(ctx, delay) != nil {
				return
			}
		}
	}
}

// backgroundLiteUpdate sends a lite update that Rebind may cancel.
func (c *Client) backgroundLiteUpdate(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	c.mu.Lock()
	c.liteCancel = cancel
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.liteCancel = nil
		c.mu.Unlock()
	}()
	err := c.sendLiteUpdate(ctx)
	if err != nil && context.Cause(ctx) == errRebind {
		return errRebind
	}
	return err
}

// rotateAt returns when the node key should be rotated, given the self
// node's key expiry in control's clock, or zero for never.
func (c *Client) rotateAt(expiry time.Time) time.Time {
	if expiry.IsZero() {
		return time.Time{}
	}
	c.mu.Lock()
	skew, last := c.skew, c.lastRotate
	c.mu.Unlock()
	at := expiry.Add(-skew).Add(-expiryMargin)
	if next := last.Add(minRotateInterval); at.Before(next) {
		at = next
	}
	return at
}

// Key rotation timing: rotate this long before the key expires, and never
// more often than minRotateInterval (control may keep reporting an expiry
// in the past).
var (
	expiryMargin      = 2 * time.Minute
	minRotateInterval = time.Minute
)
