package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/microlink-go/microlink"
)

// printPeers prints a peer list as an indented table.
func printPeers(w io.Writer, peers []microlink.Peer) {
	if len(peers) == 0 {
		fmt.Fprintf(w, "    (no peers)\n")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "    NAME\tADDRESSES\tONLINE\tPATH\tLATENCY\tRX/TX BYTES\n")
	for _, p := range peers {
		path := p.Path
		switch p.Path {
		case "direct":
			path = "direct " + p.Endpoint.String()
		case "derp":
			path = fmt.Sprintf("DERP region %d", p.DERPRegion)
		case "":
			path = "-"
		}
		lat := "-"
		if p.Latency > 0 {
			lat = roundDur(p.Latency).String()
		}
		fmt.Fprintf(tw, "    %s\t%s\t%s\t%s\t%s\t%d/%d\n", p.Name, joinAddrs(p.Addresses...), yesNo(p.Online), path, lat, p.RxBytes, p.TxBytes)
	}
	tw.Flush()
}

func via(ep netip.AddrPort, region int) string {
	switch {
	case ep.IsValid():
		return "direct " + ep.String()
	case region != 0:
		return fmt.Sprintf("DERP region %d", region)
	}
	return "an unknown path"
}

func joinAddrs(addrs ...netip.Addr) string {
	var s []string
	for _, a := range addrs {
		if a.IsValid() {
			s = append(s, a.String())
		}
	}
	if len(s) == 0 {
		return "(none)"
	}
	return strings.Join(s, ", ")
}

func containsAddr(list []netip.Addr, a netip.Addr) bool {
	for _, x := range list {
		if x == a {
			return true
		}
	}
	return false
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func roundDur(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}

func since(t time.Time) time.Duration { return time.Since(t).Round(time.Millisecond) }

func triesNote(n int) string {
	if n <= 1 {
		return ""
	}
	return fmt.Sprintf(" (answer to try %d)", n)
}

func sentNote(n int) string {
	if n <= 1 {
		return ""
	}
	return fmt.Sprintf(" (after %d sends)", n)
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// logRing keeps the last lines logged to it.
type logRing struct {
	mu    sync.Mutex
	max   int
	lines []string
}

func newLogRing(max int) *logRing { return &logRing{max: max} }

func (r *logRing) Logf(format string, args ...any) {
	line := strings.TrimRight(fmt.Sprintf(format, args...), "\n")
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.lines) == r.max {
		copy(r.lines, r.lines[1:])
		r.lines = r.lines[:r.max-1]
	}
	r.lines = append(r.lines, line)
}

// String returns the kept lines, one a line.
func (r *logRing) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.lines) == 0 {
		return ""
	}
	return strings.Join(r.lines, "\n") + "\n"
}

// WriteTo writes the kept lines to w.
func (r *logRing) WriteTo(w io.Writer) (int64, error) {
	n, err := io.WriteString(w, r.String())
	return int64(n), err
}

// logfWriter turns writes into calls of a log function, one per write.
type logfWriter func(string, ...any)

func (w logfWriter) Write(p []byte) (int, error) {
	w("%s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
