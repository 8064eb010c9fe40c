package control

import (
	"context"
	"errors"
	"sync"
	"time"
)

// errRotateKey ends a session so that the next one registers a new node
// key.
var errRotateKey = errors.New("control: node key about to expire")

// Run keeps the node registered and the map poll open until ctx is done
// or Close is called, reconnecting with exponential backoff (or as a rate
// limit asks). It returns ctx's error, ErrClosed after Close, or a
// *RegisterError when control refuses the registration.
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

	max := c.opts.MaxMessageSize
	if max <= 0 {
		max = DefaultMaxMessageSize
	}
	mr, err := newMessageReader(max) // one decoder for every poll
	if err != nil {
		return err
	}
	defer mr.close()

	var bo backoff
	for {
		connected, err := c.session(ctx, mr)
		c.closeRetired() // the poll that kept them is over
		c.mu.Lock()
		c.sessionUp = false
		c.mu.Unlock()
		if ctx.Err() != nil {
			if c.ctx.Err() != nil {
				return ErrClosed
			}
			return ctx.Err()
		}
		if connected {
			bo.reset()
		}
		if errors.Is(err, errRotateKey) {
			continue
		}
		var re *RegisterError
		if errors.As(err, &re) {
			c.setState(State{Kind: Error, Err: err})
			return err
		}
		delay := bo.next()
		var rl *RateLimitError
		if errors.As(err, &rl) {
			delay = rl.RetryAfter
		}
		if !connected {
			// Nothing worked: maybe the server key changed.
			c.forgetServer()
		}
		c.log.Info("control: session ended; retrying", "err", err, "delay", delay)
		c.setState(State{Kind: Error, Err: err})
		if sleep(ctx, delay) != nil {
			if c.ctx.Err() != nil {
				return ErrClosed
			}
			return ctx.Err()
		}
	}
}

// ErrClosed is returned by Run after Close.
var ErrClosed = errors.New("control: client closed")

// session runs one register, lite update and map poll. It reports whether
// the poll delivered a netmap.
func (c *Client) session(ctx context.Context, mr *messageReader) (connected bool, err error) {
	if c.State().Kind != NeedsMachineAuth {
		c.setState(State{Kind: Connecting})
	}
	if err := c.register(ctx); err != nil {
		return false, err
	}
	if err := c.sendLiteUpdate(ctx); err != nil {
		return false, err
	}
	c.mu.Lock()
	c.sessionUp = true
	c.mu.Unlock()
	return c.poll(ctx, mr)
}

// liteUpdater sends a lite update whenever something reported changes
// while a session is up, retrying with backoff.
func (c *Client) liteUpdater(ctx context.Context) {
	sent := -1
	var bo backoff
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.kick:
		}
		for {
			c.mu.Lock()
			up, gen := c.sessionUp, c.liteGen
			c.mu.Unlock()
			if !up || gen == sent {
				break // the next session sends everything anyway
			}
			err := c.sendLiteUpdate(ctx)
			if err == nil {
				sent = gen
				bo.reset()
				continue // something may have changed meanwhile
			}
			if ctx.Err() != nil {
				return
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
