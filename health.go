package microlink

import (
	"fmt"
	"time"
)

// keyExpiryWarning is how long before the node key expires the node warns
// about it, in its log and in Status.Health.
const keyExpiryWarning = 7 * 24 * time.Hour

// keyExpiry returns when the node key expires, in control's clock, and
// control's clock now; a zero expiry means never or not known yet.
func (n *Node) keyExpiry() (expiry, now time.Time) {
	now = time.Now()
	if ctl := n.control(); ctl != nil {
		now = ctl.Now()
	}
	return n.nm.SelfKeyExpiry(), now
}

// keyExpiryMessage describes a node key that expires within
// keyExpiryWarning (or has expired), or returns "".
func (n *Node) keyExpiryMessage() string {
	expiry, now := n.keyExpiry()
	if expiry.IsZero() {
		return ""
	}
	left := expiry.Sub(now)
	switch {
	case left > keyExpiryWarning:
		return ""
	case left <= 0:
		return fmt.Sprintf("node key expired at %s", expiry.UTC().Format(time.RFC3339))
	case n.cfg.AuthKey != "":
		return fmt.Sprintf("node key expires in %s (at %s); it will be renewed with the auth key", humanDuration(left), expiry.UTC().Format(time.RFC3339))
	default:
		return fmt.Sprintf("node key expires in %s (at %s); a login will be needed (the login URL will be shown)", humanDuration(left), expiry.UTC().Format(time.RFC3339))
	}
}

// humanDuration formats d for people: "3d4h", "5h7m", "42s".
func humanDuration(d time.Duration) string {
	switch {
	case d >= 24*time.Hour:
		d = d.Round(time.Hour)
		return fmt.Sprintf("%dd%dh", d/(24*time.Hour), d%(24*time.Hour)/time.Hour)
	case d >= time.Hour:
		d = d.Round(time.Minute)
		return fmt.Sprintf("%dh%dm", d/time.Hour, d%time.Hour/time.Minute)
	}
	return d.Round(time.Second).String()
}

// checkKeyExpiry logs the node key's expiry when control first gives it or
// changes it, then a warning once it is within keyExpiryWarning (once per
// expiry time), arming a timer for that moment. It is called whenever
// control sends the self node.
func (n *Node) checkKeyExpiry() {
	expiry, now := n.keyExpiry()
	n.mu.Lock()
	if n.keyWarnTimer != nil {
		n.keyWarnTimer.Stop()
		n.keyWarnTimer = nil
	}
	warn, changed := false, !expiry.Equal(n.keyLogged)
	n.keyLogged = expiry
	switch wait := expiry.Sub(now) - keyExpiryWarning; {
	case expiry.IsZero() || n.closed:
	case wait > 0:
		n.keyWarnTimer = time.AfterFunc(wait, n.checkKeyExpiry)
	case !n.keyWarned.Equal(expiry):
		n.keyWarned, warn = expiry, true
	}
	n.mu.Unlock()
	if changed && !expiry.IsZero() {
		n.logger.Info("microlink: node key expiry", "expiry", expiry.UTC().Format(time.RFC3339), "in", humanDuration(expiry.Sub(now)))
	}
	if warn {
		n.logger.Warn("microlink: "+n.keyExpiryMessage(), "expiry", expiry)
	}
}

// health returns the node's health messages: control's, then the node
// key's expiry warning.
func (n *Node) health() []string {
	var out []string
	if ctl := n.control(); ctl != nil {
		out = ctl.Health()
	}
	if m := n.keyExpiryMessage(); m != "" {
		out = append(out, m)
	}
	return out
}
