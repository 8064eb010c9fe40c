package control

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
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
func statusError(op string, res *http.Response, now time.Time) error {
	msg, _ := io.ReadAll(io.LimitReader(res.Body, 4<<10))
	res.Body.Close()
	text := strings.TrimSpace(string(msg))
	ra := res.Header.Get("Retry-After")
	if res.StatusCode == http.StatusTooManyRequests || (res.StatusCode == http.StatusServiceUnavailable && ra != "") {
		return &RateLimitError{Status: res.StatusCode, RetryAfter: parseRetryAfter(ra, now), Msg: text}
	}
	return &HTTPError{Op: op, Status: res.StatusCode, Msg: text}
}

// parseRetryAfter reads a Retry-After value: seconds or an HTTP date.
// Missing, non-positive or over an hour gives a random 5–10 s; the result
// never exceeds five minutes.
func parseRetryAfter(v string, now time.Time) time.Duration {
	var d time.Duration
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
		d = time.Duration(min(s, 7200)) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	if d <= 0 || d > time.Hour {
		d = 5*time.Second + rand.N(5*time.Second)
	}
	return min(d, maxRetryAfter)
}
