// Basic_connect joins a tailnet, prints its own addresses and the list of
// peers, and exits. With -wait it keeps running and prints every change of
// the peer list until interrupted.
//
// Usage:
//
//	basic_connect [-authkey KEY] [-control-url URL] [-hostname NAME] [-statedir DIR] [-port N] [-wait] [-v]
//
// Every flag left empty falls back to an environment variable: TS_AUTHKEY,
// TS_CONTROL_URL, TS_HOSTNAME, TS_STATE_DIR and TS_PORT.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/microlink-go/microlink"
)

func main() {
	var cfg microlink.Config
	flag.StringVar(&cfg.AuthKey, "authkey", "", "auth key (default $TS_AUTHKEY; none: log in interactively)")
	flag.StringVar(&cfg.ControlURL, "control-url", "", "control server URL (default $TS_CONTROL_URL, then Tailscale's)")
	flag.StringVar(&cfg.Hostname, "hostname", "", "name in the tailnet (default $TS_HOSTNAME, then the OS host name)")
	flag.StringVar(&cfg.StateDir, "statedir", "", "directory keeping the node's identity (default $TS_STATE_DIR; none: a new node every run)")
	flag.IntVar(&cfg.Port, "port", 0, "local UDP port (default $TS_PORT, then 41641; -1: any free port)")
	wait := flag.Bool("wait", false, "keep running and print changes of the peer list until interrupted")
	timeout := flag.Duration("timeout", 2*time.Minute, "how long to wait to join the tailnet")
	verbose := flag.Bool("v", false, "show microlink's own logs")
	flag.Parse()
	if flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	// Flags left empty fall back to the TS_* environment variables.
	if err := cfg.ApplyEnv(); err != nil {
		log.Error("bad environment", "err", err)
		os.Exit(2)
	}
	cfg.Logger = nodeLogger(*verbose)
	cfg.OnAuthURL = func(url string) { log.Warn("to authorize this node, visit the login URL", "url", url) }

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, *timeout, *wait, os.Stdout, log); err != nil {
		log.Error("basic_connect failed", "err", err)
		stop()
		os.Exit(1)
	}
}

// nodeLogger returns the logger handed to microlink: warnings and errors
// only, unless verbose.
func nodeLogger(verbose bool) *slog.Logger {
	level := slog.LevelWarn
	if verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

func run(ctx context.Context, cfg microlink.Config, timeout time.Duration, wait bool, out io.Writer, log *slog.Logger) error {
	n, err := microlink.New(cfg)
	if err != nil {
		return err
	}
	defer n.Close()

	// Register the watcher before Start so that no change is missed.
	changed := make(chan struct{}, 1)
	n.Watch(func(ev microlink.Event) {
		// Watch callbacks must not block: note the change and move on.
		select {
		case changed <- struct{}{}:
		default:
		}
	})

	startCtx, cancel := context.WithTimeout(ctx, timeout)
	err = n.Start(startCtx)
	cancel()
	if err != nil {
		return fmt.Errorf("joining the tailnet: %w", err)
	}

	st := n.Status()
	fmt.Fprintf(out, "joined the tailnet as %s\n", st.FQDN)
	printAddr(out, "IPv4", n.IPv4())
	printAddr(out, "IPv6", n.IPv6())
	peers := n.Peers()
	printPeers(out, peers)
	if !wait {
		return nil
	}

	fmt.Fprintf(out, "watching for changes; press Ctrl-C to stop\n")
	state := st.State
	for {
		select {
		case <-ctx.Done():
			log.Info("shutting down")
			return n.Close()
		case <-changed:
		}
		if s := n.State(); s != state {
			fmt.Fprintf(out, "state: %v\n", s)
			state = s
		}
		now := n.Peers()
		for _, line := range peerChanges(peers, now) {
			fmt.Fprintln(out, line)
		}
		peers = now
	}
}

func printAddr(out io.Writer, label string, a netip.Addr) {
	if a.IsValid() {
		fmt.Fprintf(out, "  %s  %s\n", label, a)
	}
}

func printPeers(out io.Writer, peers []microlink.Peer) {
	fmt.Fprintf(out, "peers (%d):\n", len(peers))
	if len(peers) == 0 {
		return
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  NAME\tADDRESSES\tONLINE\tOS\tPATH")
	for _, p := range peers {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", p.Name, addrList(p.Addresses), yesNo(p.Online), orDash(p.OS), path(p))
	}
	tw.Flush()
}

// path describes how packets reach p: a direct address, a DERP relay, or
// "-" when nothing has been sent to it yet.
func path(p microlink.Peer) string {
	switch p.Path {
	case "direct":
		return "direct " + p.Endpoint.String()
	case "derp":
		return fmt.Sprintf("DERP(%d)", p.DERPRegion)
	}
	return "-"
}

// peerChanges describes what differs between two peer lists, sorted by
// name as Peers returns them, one line per change.
func peerChanges(before, after []microlink.Peer) []string {
	old := make(map[string]microlink.Peer, len(before))
	for _, p := range before {
		old[p.NodeKey] = p
	}
	var lines []string
	for _, p := range after {
		q, ok := old[p.NodeKey]
		delete(old, p.NodeKey)
		switch {
		case !ok:
			lines = append(lines, fmt.Sprintf("peer joined: %s %s (online: %s)", p.Name, addrList(p.Addresses), yesNo(p.Online)))
		case q.Online != p.Online:
			lines = append(lines, fmt.Sprintf("peer %s is now %s", p.Name, map[bool]string{true: "online", false: "offline"}[p.Online]))
		case q.Name != p.Name:
			lines = append(lines, fmt.Sprintf("peer %s is now called %s", q.Name, p.Name))
		case !slices.Equal(q.Addresses, p.Addresses):
			lines = append(lines, fmt.Sprintf("peer %s has new addresses: %s", p.Name, addrList(p.Addresses)))
		}
	}
	var gone []string
	for _, p := range old {
		gone = append(gone, fmt.Sprintf("peer left: %s", p.Name))
	}
	slices.Sort(gone)
	return append(lines, gone...)
}

func addrList(addrs []netip.Addr) string {
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
