// Ping_pong joins a tailnet and stays up, answering "tailscale ping" from
// any peer, and every few seconds pings each online peer itself, printing
// one line per answer with the round-trip time and the path it took.
//
// Usage:
//
//	ping_pong [-authkey KEY] [-control-url URL] [-hostname NAME] [-statedir DIR] [-port N]
//	          [-interval 5s] [-type disco|tsmp|icmp] [-all] [-v]
//
// Every flag left empty falls back to an environment variable: TS_AUTHKEY,
// TS_CONTROL_URL, TS_HOSTNAME, TS_STATE_DIR and TS_PORT.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
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
	interval := flag.Duration("interval", 5*time.Second, "time between rounds of pings")
	typeName := flag.String("type", "disco", "kind of ping: disco (the path, like tailscale ping), tsmp or icmp (through WireGuard)")
	all := flag.Bool("all", false, "ping every peer, also those control reports offline")
	timeout := flag.Duration("timeout", 2*time.Minute, "how long to wait to join the tailnet")
	verbose := flag.Bool("v", false, "show microlink's own logs")
	flag.Parse()
	typ, err := parsePingType(*typeName)
	if err != nil || flag.NArg() > 0 || *interval <= 0 {
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
		flag.Usage()
		os.Exit(2)
	}

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	// Flags left empty fall back to the TS_* environment variables.
	if err := cfg.ApplyEnv(); err != nil {
		log.Error("bad environment", "err", err)
		os.Exit(2)
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelDebug
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	cfg.OnAuthURL = func(url string) { log.Warn("to authorize this node, visit the login URL", "url", url) }

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	p := &pinger{typ: typ, interval: *interval, all: *all, out: os.Stdout, log: log}
	if err := p.run(ctx, cfg, *timeout); err != nil {
		log.Error("ping_pong failed", "err", err)
		stop()
		os.Exit(1)
	}
}

func parsePingType(s string) (microlink.PingType, error) {
	switch strings.ToLower(s) {
	case "disco":
		return microlink.PingDisco, nil
	case "tsmp":
		return microlink.PingTSMP, nil
	case "icmp":
		return microlink.PingICMP, nil
	}
	return 0, fmt.Errorf("unknown ping type %q: want disco, tsmp or icmp", s)
}

// pinger pings the peers of a node in rounds.
type pinger struct {
	typ      microlink.PingType
	interval time.Duration
	all      bool
	log      *slog.Logger

	mu  sync.Mutex // serializes lines written to out
	out io.Writer
}

func (p *pinger) run(ctx context.Context, cfg microlink.Config, timeout time.Duration) error {
	n, err := microlink.New(cfg)
	if err != nil {
		return err
	}
	defer n.Close()
	startCtx, cancel := context.WithTimeout(ctx, timeout)
	err = n.Start(startCtx)
	cancel()
	if err != nil {
		return fmt.Errorf("joining the tailnet: %w", err)
	}
	p.printf("up as %s (%s); try: tailscale ping %s\n", n.Status().FQDN, n.IPv4(), n.IPv4())

	tick := time.NewTicker(p.interval)
	defer tick.Stop()
	for {
		p.round(ctx, n)
		select {
		case <-ctx.Done():
			p.log.Info("shutting down")
			return n.Close()
		case <-tick.C:
		}
	}
}

// round pings the chosen peers at once and returns when every ping has
// been answered or has timed out.
func (p *pinger) round(ctx context.Context, n *microlink.Node) {
	// A ping that takes longer than the interval is as good as lost.
	ctx, cancel := context.WithTimeout(ctx, p.interval)
	defer cancel()
	var wg sync.WaitGroup
	for _, peer := range n.Peers() {
		if (!peer.Online && !p.all) || peer.Expired || len(peer.Addresses) == 0 {
			continue
		}
		wg.Go(func() { p.ping(ctx, n, peer) })
	}
	wg.Wait()
}

func (p *pinger) ping(ctx context.Context, n *microlink.Node, peer microlink.Peer) {
	ip := peer.Addresses[0]
	res, err := n.Ping(ctx, ip.String(), p.typ)
	if err != nil {
		if errors.Is(ctx.Err(), context.Canceled) {
			return // shutting down
		}
		p.printf("no %v pong from %s (%s): %v\n", p.typ, peer.Name, ip, err)
		return
	}
	via := fmt.Sprintf("DERP(%d)", res.DERPRegion)
	if res.Endpoint.IsValid() {
		via = res.Endpoint.String()
	}
	p.printf("%v pong from %s (%s) via %s in %v\n", p.typ, peer.Name, ip, via, res.Latency.Round(time.Microsecond))
}

func (p *pinger) printf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.out, format, args...)
}
