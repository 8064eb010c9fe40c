package control

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/microlink-go/microlink/internal/ts2021"
)

// Backoff and rate-limit bounds.
const (
	minBackoff    = time.Second
	maxBackoff    = 30 * time.Second
	maxRetryAfter = 5 * time.Minute
)

// backoff is an exponential delay with jitter.
type backoff struct {
	n int
}

// next returns the delay before the next attempt: 1 s doubling to 30 s,
// each scaled by a random factor in [0.5, 1.0).
func (b *backoff) next() time.Duration {
	d := minBackoff << min(b.n, 10)
	if d > maxBackoff {
		d = maxBackoff
	}
	b.n++
	return d/2 + rand.N(d/2)
}

func (b *backoff) reset() { b.n = 0 }

// sleep waits for d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// RateLimitError is returned when control answers 429, or 503 with
// Retry-After: the client waits RetryAfter before trying again.
type RateLimitError struct {
	Status     int
	RetryAfter time.Duration
	Msg        string
}

func (e *RateLimitError) Error() string {
	return fmt.Sprintf("control: rate limited (HTTP %d), retry after %v: %.200s", e.Status, e.RetryAfter, e.Msg)
}

// HTTPError is a non-200 answer from control.
type HTTPError struct {
	Op     string
	Status int
	Msg    string
}

func (e *HTTPError) Error() string {
	return fmt.Sprintf("control: %s: HTTP %d: %.200s", e.Op, e.Status, e.Msg)
}

// statusError turns a non-200 response into an error, consuming its body.
func statusError(op string, res *ts2021.Response, now time.Time) error {
	msg, _ := io.ReadAll(io.LimitReader(res.Body, 4<<10))
	res.Body.Close()
	text := strings.TrimSpace(string(msg))
	ra := res.Header.Get("Retry-After")
	if res.Status == 429 || (res.Status == 503 && ra != "") {
		return &RateLimitError{Status: res.Status, RetryAfter: parseRetryAfter(ra, now), Msg: text}
	}
	return &HTTPError{Op: op, Status: res.Status, Msg: text}
}

// parseRetryAfter reads a Retry-After value: seconds or an HTTP date.
// Missing, non-positive or over an hour gives a random 5–10 s; the result
// never exceeds five minutes.
func parseRetryAfter(v string, now time.Time) time.Duration {
	var d time.Duration
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
		d = time.Duration(min(s, 7200)) * time.Second
	} else if t, err := parseHTTPDate(v); err == nil {
		d = t.Sub(now)
	}
	if d <= 0 || d > time.Hour {
		d = 5*time.Second + rand.N(5*time.Second)
	}
	return min(d, maxRetryAfter)
}

// httpDateLayouts are the forms of an HTTP date (RFC 9110, section
// 5.6.7): IMF-fixdate, then the obsolete RFC 850 and asctime forms.
var httpDateLayouts = []string{
	"Mon, 02 Jan 2006 15:04:05 GMT",
	"Monday, 02-Jan-06 15:04:05 GMT",
	"Mon Jan _2 15:04:05 2006",
}

// parseHTTPDate parses an HTTP date, which is always in UTC.
func parseHTTPDate(v string) (time.Time, error) {
	v = strings.TrimSpace(v)
	var err error
	for _, layout := range httpDateLayouts {
		var t time.Time
		if t, err = time.Parse(layout, v); err == nil {
			return t, nil
		}
	}
	return time.Time{}, err
}
