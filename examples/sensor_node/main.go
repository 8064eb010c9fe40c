// Sensor_node joins a tailnet and, every few seconds, sends a JSON reading
// of a simulated temperature sensor in a UDP datagram to a collector
// elsewhere in the tailnet (see the collector directory for one).
//
// A reading looks like:
//
//	{"node":"sensor-1","seq":7,"time":"2025-01-02T15:04:05.123Z","temperature_c":21.37,"uptime_s":30.004}
//
// seq counts readings from 1, including those that could not be sent, so
// that the collector notices gaps; uptime_s is the time since the program
// started.
//
// Usage:
//
//	sensor_node [-authkey KEY] [-control-url URL] [-hostname NAME] [-statedir DIR] [-port N]
//	            [-collector collector:9999] [-interval 5s] [-count N] [-v]
//
// Every flag left empty falls back to an environment variable: TS_AUTHKEY,
// TS_CONTROL_URL, TS_HOSTNAME, TS_STATE_DIR and TS_PORT.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/microlink-go/microlink"
)

// Reading is one measurement as sent on the wire.
type Reading struct {
	Node         string    `json:"node"`
	Seq          uint64    `json:"seq"`
	Time         time.Time `json:"time"`
	TemperatureC float64   `json:"temperature_c"`
	UptimeS      float64   `json:"uptime_s"`
}

func main() {
	var cfg microlink.Config
	flag.StringVar(&cfg.AuthKey, "authkey", "", "auth key (default $TS_AUTHKEY; none: log in interactively)")
	flag.StringVar(&cfg.ControlURL, "control-url", "", "control server URL (default $TS_CONTROL_URL, then Tailscale's)")
	flag.StringVar(&cfg.Hostname, "hostname", "", "name in the tailnet (default $TS_HOSTNAME, then the OS host name)")
	flag.StringVar(&cfg.StateDir, "statedir", "", "directory keeping the node's identity (default $TS_STATE_DIR; none: a new node every run)")
	flag.IntVar(&cfg.Port, "port", 0, "local UDP port (default $TS_PORT, then 41641; -1: any free port)")
	collector := flag.String("collector", "collector:9999", "where to send readings: tailnet name (or address) and UDP port")
	interval := flag.Duration("interval", 5*time.Second, "time between readings")
	count := flag.Uint64("count", 0, "stop after this many readings (0: run until interrupted)")
	timeout := flag.Duration("timeout", 2*time.Minute, "how long to wait to join the tailnet")
	verbose := flag.Bool("v", false, "show microlink's own logs")
	flag.Parse()
	if _, _, err := net.SplitHostPort(*collector); err != nil || flag.NArg() > 0 || *interval <= 0 {
		if err != nil {
			fmt.Fprintf(os.Stderr, "-collector %q: want name:port\n", *collector)
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
	s := &sensor{start: time.Now(), collector: *collector, interval: *interval, count: *count, log: log}
	if err := s.run(ctx, cfg, *timeout); err != nil {
		log.Error("sensor_node failed", "err", err)
		stop()
		os.Exit(1)
	}
}

type sensor struct {
	start     time.Time
	collector string
	interval  time.Duration
	count     uint64
	log       *slog.Logger

	seq    uint64
	failed bool // the last send failed: log only the first of a series
}

func (s *sensor) run(ctx context.Context, cfg microlink.Config, timeout time.Duration) error {
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
	name := n.Status().Hostname
	s.log.Info("joined the tailnet", "name", name, "ip", n.IPv4(), "collector", s.collector, "interval", s.interval)

	tick := time.NewTicker(s.interval)
	defer tick.Stop()
	for {
		s.send(ctx, n, s.read(name, time.Now()))
		if s.count != 0 && s.seq >= s.count {
			break
		}
		select {
		case <-ctx.Done():
			s.log.Info("shutting down", "readings", s.seq)
			return n.Close()
		case <-tick.C:
		}
	}
	s.log.Info("sent all readings", "readings", s.seq)
	return n.Close()
}

// read takes the next reading of the simulated sensor: a temperature that
// drifts around 21 °C over ten minutes, with some noise.
func (s *sensor) read(node string, now time.Time) Reading {
	s.seq++
	up := now.Sub(s.start)
	temp := 21 + 3*math.Sin(2*math.Pi*up.Minutes()/10) + (rand.Float64()-0.5)*0.4
	return Reading{
		Node:         node,
		Seq:          s.seq,
		Time:         now.UTC(),
		TemperatureC: math.Round(temp*100) / 100,
		UptimeS:      math.Round(up.Seconds()*1000) / 1000,
	}
}

func (s *sensor) send(ctx context.Context, n *microlink.Node, r Reading) {
	b, err := json.Marshal(r)
	if err != nil {
		s.log.Error("encoding reading", "err", err)
		return
	}
	err = n.SendUDP(ctx, s.collector, b)
	switch {
	case err != nil && errors.Is(ctx.Err(), context.Canceled):
		// shutting down
	case err != nil:
		if !s.failed {
			s.log.Warn("cannot send readings to the collector; will keep trying", "collector", s.collector, "seq", r.Seq, "err", err)
		}
		s.failed = true
	default:
		if s.failed {
			s.log.Info("sending readings again", "collector", s.collector, "seq", r.Seq)
		}
		s.failed = false
		s.log.Info("sent reading", "seq", r.Seq, "temperature_c", r.TemperatureC)
	}
}
