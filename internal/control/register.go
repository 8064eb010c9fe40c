package control

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/microlink-go/microlink/internal/h2"
	"github.com/microlink-go/microlink/internal/key"
	"github.com/microlink-go/microlink/internal/tailcfg"
	"github.com/microlink-go/microlink/internal/ts2021"
)

// maxBody bounds register responses and other small bodies.
const maxBody = 1 << 20

// RegisterError is a refusal by control (RegisterResponse.Error), such as
// an invalid auth key. Run returns it when control refuses the very first
// login; later refusals are retried.
type RegisterError struct{ Msg string }

func (e *RegisterError) Error() string { return "control: registration refused: " + e.Msg }

// errNewKeyExpired means control called a node key we just generated
// expired; retrying after a backoff is the only sensible answer.
var errNewKeyExpired = errors.New("control: server reports the new node key as expired")

// noiseClient returns the ts2021 client, fetching the server key first if
// needed.
func (c *Client) noiseClient(ctx context.Context) (*ts2021.Client, error) {
	c.mu.Lock()
	nc, sk := c.noise, c.serverKey
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return nil, ts2021.ErrClosed
	}
	if nc != nil {
		return nc, nil
	}
	if sk.IsZero() {
		kctx, cancel := context.WithTimeout(ctx, keyTimeout)
		var err error
		sk, err = ts2021.FetchServerKey(kctx, c.hc, c.opts.ServerURL, CapabilityVersion)
		cancel()
		if err != nil {
			return nil, err
		}
		c.log.Debug("control server key", "key", sk.String())
	}
	d, err := ts2021.NewDialer(c.opts.ServerURL, c.opts.MachineKey, sk, CapabilityVersion)
	if err != nil {
		return nil, err
	}
	d.Logger = c.log
	nc = ts2021.NewClient(d, &h2.Options{
		ReadIdleTimeout: cmp.Or(c.opts.PingAfter, DefaultPingAfter),
		PingTimeout:     cmp.Or(c.opts.PingTimeout, DefaultPingTimeout),
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		nc.Close()
		return nil, ts2021.ErrClosed
	}
	if c.noise != nil { // lost a race
		nc.Close()
		return c.noise, nil
	}
	c.serverKey, c.noise = sk, nc
	return nc, nil
}

// forgetServer drops the connection and the server key so that the next
// attempt fetches the key again.
func (c *Client) forgetServer() {
	c.mu.Lock()
	nc := c.noise
	c.noise, c.serverKey = nil, key.MachinePublic{}
	c.mu.Unlock()
	if nc != nil {
		nc.Close()
	}
}

// closeConns closes the Noise connections; the next request dials again.
func (c *Client) closeConns() {
	c.mu.Lock()
	nc := c.noise
	c.mu.Unlock()
	if nc != nil {
		nc.CloseConns()
	}
}

// post sends a JSON request over Noise. The Ts-Lb header carries each
// non-zero key in lb.
func (c *Client) post(ctx context.Context, path string, body any, lb ...key.NodePublic) (*ts2021.Response, error) {
	nc, err := c.noiseClient(ctx)
	if err != nil {
		return nil, err
	}
	return nc.Post(ctx, path, body, lb...)
}

// doRegister sends one RegisterRequest and decodes the answer.
func (c *Client) doRegister(ctx context.Context, req *tailcfg.RegisterRequest) (*tailcfg.RegisterResponse, error) {
	timeout := requestTimeout
	if req.Followup != "" { // a follow-up waits for the user
		timeout = followupTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c.registers.Add(1)
	res, err := c.post(ctx, "/machine/register", req, req.OldNodeKey, req.NodeKey)
	if err != nil {
		return nil, fmt.Errorf("control: register: %w", err)
	}
	if res.Status != 200 {
		return nil, statusError("register", res, time.Now())
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, maxBody+1))
	if err != nil {
		return nil, fmt.Errorf("control: register: reading response: %w", err)
	}
	if len(b) > maxBody {
		return nil, errors.New("control: register: response too large")
	}
	var resp tailcfg.RegisterResponse
	if err := json.Unmarshal(b, &resp); err != nil {
		return nil, fmt.Errorf("control: register: decoding response: %w", err)
	}
	return &resp, nil
}

func (c *Client) registerRequest(nodeKey, oldKey key.Private, followup string) *tailcfg.RegisterRequest {
	c.mu.Lock()
	hi := c.hostinfo
	c.mu.Unlock()
	req := &tailcfg.RegisterRequest{
		Version:   CapabilityVersion,
		NodeKey:   nodeKey.NodePublic(),
		Followup:  followup,
		Hostinfo:  hi,
		Ephemeral: c.opts.Ephemeral,
	}
	if !oldKey.IsZero() {
		req.OldNodeKey = oldKey.NodePublic()
	}
	if c.opts.AuthKey != "" {
		req.Auth = &tailcfg.RegisterResponseAuth{AuthKey: c.opts.AuthKey}
	}
	return req
}

// login registers the node key until control accepts it, rotating the
// key when control says it expired (or when a rotation is pending) and
// walking the user through an interactive login when there is no auth key.
func (c *Client) login(ctx context.Context) error {
	var urlBackoff backoff
	for {
		c.mu.Lock()
		if c.rotate && c.tryingKey.IsZero() {
			c.tryingKey, c.oldKey = key.NewPrivate(), c.nodeKey
			c.lastRotate = time.Now()
			c.authURL = ""
		}
		c.rotate = false
		nodeKey, oldKey, followup := c.nodeKey, key.Private{}, c.authURL
		trying := !c.tryingKey.IsZero()
		if trying {
			nodeKey, oldKey = c.tryingKey, c.oldKey
		}
		c.mu.Unlock()

		resp, err := c.doRegister(ctx, c.registerRequest(nodeKey, oldKey, followup))
		if followup != "" && errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			continue // the user is taking their time: ask again
		}
		if err != nil {
			var he *HTTPError
			if followup != "" && errors.As(err, &he) {
				c.mu.Lock()
				c.authURL = "" // start the login over
				c.mu.Unlock()
			}
			return err
		}
		switch {
		case resp.Error != "":
			return &RegisterError{Msg: resp.Error}
		case resp.NodeKeyExpired:
			if trying {
				return errNewKeyExpired
			}
			c.log.Info("control: node key expired; rotating", "old", nodeKey.NodePublic().ShortString())
			c.mu.Lock()
			c.rotate = true
			c.mu.Unlock()
			continue
		case resp.AuthURL != "":
			if resp.AuthURL == followup {
				// Login not finished yet: wait and ask again.
				if err := sleep(ctx, urlBackoff.next()); err != nil {
					return err
				}
				continue
			}
			c.mu.Lock()
			c.authURL = resp.AuthURL
			c.mu.Unlock()
			c.setState(State{Kind: NeedsLogin, AuthURL: resp.AuthURL})
			continue
		}

		// Accepted.
		c.mu.Lock()
		c.authURL = ""
		rotated := trying
		if trying {
			c.nodeKey, c.tryingKey, c.oldKey = c.tryingKey, key.Private{}, key.Private{}
		}
		newKey := c.nodeKey
		c.loggedIn, c.everUp = true, true
		c.loginsSinceUp++
		wasNeedsLogin := c.state.Kind == NeedsLogin
		c.mu.Unlock()
		c.log.Info("control: logged in", "nodekey", newKey.NodePublic().ShortString(), "rotated", rotated)
		if rotated && c.opts.OnNodeKey != nil {
			c.opts.OnNodeKey(newKey)
		}
		switch {
		case !resp.MachineAuthorized:
			c.setState(State{Kind: NeedsMachineAuth})
		case wasNeedsLogin:
			c.setState(State{Kind: Connecting})
		}
		return nil
	}
}

// Logout asks control to expire the node key. The client should be closed
// afterwards.
func (c *Client) Logout(ctx context.Context) error {
	c.mu.Lock()
	nk := c.nodeKey
	c.mu.Unlock()
	// Like every registration, the logout carries the auth key if there is
	// one: servers that require it check it on every request.
	req := c.registerRequest(nk, key.Private{}, "")
	req.Expiry = time.Unix(123, 0)
	resp, err := c.doRegister(ctx, req)
	if err != nil {
		return err
	}
	if resp.Error != "" {
		return &RegisterError{Msg: resp.Error}
	}
	return nil
}
