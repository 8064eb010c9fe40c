package control

import (
	"slices"
	"strings"
	"time"

	"github.com/microlink-go/microlink/internal/tailcfg"
)

// controlTimeEpoch: a ControlTime before it is taken for a test server's
// frozen clock (testcontrol sends 2020-08-03), not for our clock being
// years ahead, and ignored. tailscaled guards its peer-expiry checks the
// same way.
var controlTimeEpoch = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// minClockSkew: a difference from control's clock below this is noise.
const minClockSkew = time.Minute

// noteControlTime estimates control's clock from a ControlTime.
func (c *Client) noteControlTime(t time.Time) {
	if t.Before(controlTimeEpoch) {
		return
	}
	skew := t.Sub(time.Now())
	if skew.Abs() < minClockSkew {
		skew = 0
	}
	c.mu.Lock()
	c.skew = skew
	c.mu.Unlock()
}

// Now returns the local time corrected by control's clock, for judging key
// expiry.
func (c *Client) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.skew)
}

// KeyExpiry returns when the node key expires, in control's clock (compare
// it with Now), as the last self node said; zero means never or not known
// yet.
func (c *Client) KeyExpiry() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.keyExpiry
}

// noteHealth applies a message's Health and DisplayMessages and logs what
// changed. The first message of a stream starts afresh, as a new stream
// restates everything.
func (c *Client) noteHealth(resp *tailcfg.MapResponse, first bool) {
	if !first && resp.Health == nil && len(resp.DisplayMessages) == 0 {
		return
	}
	c.mu.Lock()
	before := c.healthLocked()
	if first {
		c.health, c.display = nil, nil
	}
	if resp.Health != nil {
		c.health = slices.Clone(resp.Health)
	}
	if v, ok := resp.DisplayMessages["*"]; ok && v == nil {
		c.display = nil
	}
	for id, m := range resp.DisplayMessages {
		switch {
		case m != nil:
			if c.display == nil {
				c.display = make(map[string]tailcfg.DisplayMessage)
			}
			c.display[id] = *m
		case id != "*":
			delete(c.display, id)
		}
	}
	after := c.healthLocked()
	c.mu.Unlock()
	for _, h := range after {
		if !slices.Contains(before, h) {
			c.log.Warn("control: health warning", "msg", h)
		}
	}
	for _, h := range before {
		if !slices.Contains(after, h) {
			c.log.Info("control: health warning cleared", "msg", h)
		}
	}
}

// Health returns control's current health messages for the node: its
// Health list, then its display messages as "Title: Text", sorted by ID.
// None means control sees no problem.
func (c *Client) Health() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.healthLocked()
}

func (c *Client) healthLocked() []string {
	out := slices.Clone(c.health)
	ids := make([]string, 0, len(c.display))
	for id := range c.display {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, strings.Compare) // the sort encoding/json links already
	for _, id := range ids {
		m := c.display[id]
		s := m.Title
		if m.Text != "" {
			if s != "" {
				s += ": "
			}
			s += m.Text
		}
		if m.PrimaryAction != nil && m.PrimaryAction.URL != "" {
			s += " (" + m.PrimaryAction.URL + ")"
		}
		if s == "" {
			s = id
		}
		out = append(out, s)
	}
	return out
}
