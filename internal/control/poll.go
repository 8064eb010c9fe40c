package control

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/microlink-go/microlink/internal/tailcfg"
)

// DefaultPollTimeout is the map-stream watchdog.
const DefaultPollTimeout = 120 * time.Second

// Request deadlines. requestTimeout bounds requests that should answer
// promptly: lite updates, logins and logouts (the map poll has its
// watchdog). An interactive login's follow-up waits for a person and is
// sent again after followupTimeout. keyTimeout bounds the fetch of the
// server's key.
const (
	requestTimeout = time.Minute
	keyTimeout     = 10 * time.Second
)

var followupTimeout = 5 * time.Minute // a variable for tests

// mapRequest builds a MapRequest with everything the client reports, and
// returns the liteGen it reflects.
func (c *Client) mapRequest(stream bool) (*tailcfg.MapRequest, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	hi := *c.hostinfo
	ni := tailcfg.NetInfo{}
	if hi.NetInfo != nil {
		ni = *hi.NetInfo
	}
	ni.PreferredDERP = c.homeDERP
	hi.NetInfo = &ni
	req := &tailcfg.MapRequest{
		Version:   CapabilityVersion,
		Compress:  "zstd",
		KeepAlive: true,
		NodeKey:   c.nodeKey.NodePublic(),
		DiscoKey:  c.discoKey,
		Stream:    stream,
		Hostinfo:  &hi,
		OmitPeers: !stream,
	}
	for _, ep := range c.endpoints {
		req.Endpoints = append(req.Endpoints, ep.AddrPort)
		req.EndpointTypes = append(req.EndpointTypes, ep.Type)
	}
	return req, c.liteGen
}

// sendLiteUpdate reports disco key, endpoints and Hostinfo without
// disturbing the streaming poll.
func (c *Client) sendLiteUpdate(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	req, gen := c.mapRequest(false)
	res, err := c.post(ctx, "/machine/map", req, req.NodeKey)
	if err != nil {
		return fmt.Errorf("control: lite update: %w", err)
	}
	if res.Status != 200 {
		return statusError("lite update", res, time.Now())
	}
	_, err = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<20))
	res.Body.Close()
	if err != nil {
		return fmt.Errorf("control: lite update: %w", err)
	}
	c.mu.Lock()
	c.liteSent = max(c.liteSent, gen)
	c.mu.Unlock()
	c.log.Debug("control: lite update sent", "endpoints", len(req.Endpoints), "derp", req.Hostinfo.NetInfo.PreferredDERP)
	if c.opts.OnReported != nil {
		c.opts.OnReported(req.Hostinfo.NetInfo.PreferredDERP, len(req.Endpoints))
	}
	return nil
}

var errNoSelfNode = errors.New("control: first map response lacks the self node")

// poll runs the streaming map poll until it fails. It reports whether it
// delivered a netmap.
func (c *Client) poll(ctx context.Context, mr *messageReader) (connected bool, err error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	// The watchdog runs from the request on: a server that takes the poll
	// but never answers it is dropped like one that goes quiet later.
	timeout := c.opts.PollTimeout
	if timeout <= 0 {
		timeout = DefaultPollTimeout
	}
	errWatchdog := fmt.Errorf("control: no map message for %v", timeout)
	watchdog := time.AfterFunc(timeout, func() { cancel(errWatchdog) })
	defer watchdog.Stop()
	// fail returns the error that ended the poll, the watchdog's if it
	// fired.
	fail := func(err error) error {
		if context.Cause(ctx) != errWatchdog {
			return err
		}
		// The connection may be dead without knowing it: dial afresh
		// rather than queue the next requests on it.
		c.closeConns()
		return errWatchdog
	}

	req, _ := c.mapRequest(true)
	res, err := c.post(ctx, "/machine/map", req, req.NodeKey)
	if err != nil {
		return false, fail(fmt.Errorf("control: map poll: %w", err))
	}
	if res.Status != 200 {
		return false, statusError("map poll", res, time.Now())
	}
	defer res.Body.Close()

	var rotate *time.Timer
	defer func() {
		if rotate != nil {
			rotate.Stop()
		}
	}()

	mr.reset(res.Body, req.Compress == "zstd")
	first := true
	for {
		resp, err := mr.next()
		if err != nil {
			if cause := context.Cause(ctx); cause != nil && ctx.Err() != nil {
				err = cause
			}
			if err == io.EOF {
				err = errors.New("control: map stream ended")
			}
			return connected, fail(err)
		}
		watchdog.Reset(timeout)
		c.handleHousekeeping(resp.MapResponse)
		if resp.KeepAlive {
			continue
		}
		c.noteHealth(resp.MapResponse, first)
		if first {
			if resp.Node == nil {
				return connected, errNoSelfNode
			}
			first = false
			if c.opts.OnNewStream != nil {
				c.opts.OnNewStream()
			}
		}
		// The message is handed on before the state changes, so that
		// whoever sees Connected already has the netmap that made it so.
		if c.opts.OnMapResponse != nil {
			c.opts.OnMapResponse(resp)
		}
		if n := resp.Node; n != nil {
			c.mu.Lock()
			c.keyExpiry = n.KeyExpiry
			c.everUp, c.loggedIn, c.loginsSinceUp = true, true, 0
			c.mu.Unlock()
			if n.MachineAuthorized {
				c.setState(State{Kind: Connected})
			} else {
				c.setState(State{Kind: NeedsMachineAuth})
			}
			connected = true
			if rotate != nil {
				rotate.Stop()
				rotate = nil
			}
			if at := c.rotateAt(n.KeyExpiry); !at.IsZero() {
				rotate = time.AfterFunc(time.Until(at), func() {
					c.mu.Lock()
					c.rotate = true
					c.mu.Unlock()
					cancel(errRotateKey)
				})
			}
		}
	}
}

// handleHousekeeping honours the parts of a message that matter even in
// keep-alives: the control clock and ping requests.
func (c *Client) handleHousekeeping(resp *tailcfg.MapResponse) {
	if t := resp.ControlTime; t != nil {
		c.noteControlTime(*t)
	}
	if pr := resp.PingRequest; pr != nil {
		c.handlePing(pr)
	}
}
