// Collector joins a tailnet, listens on a UDP port of its tailnet address
// and prints every sensor reading it receives, after checking that it is
// well-formed JSON with the fields sensor_node sends.
//
// Each valid reading gives one line on standard output:
//
//	reading node=sensor-1 seq=7 time=2025-01-02T15:04:05.123Z temperature_c=21.37 uptime_s=30.004 from=sensor-1 100.64.0.3:52011
//
// followed by note="…" when readings from that node were missed or came
// out of order. Anything else gives a line starting with "invalid". The
// sender's name after from= comes from the tailnet, which authenticates
// every packet, so it cannot be forged by the sender, unlike the node field.
//
// Usage:
//
//	collector [-authkey KEY] [-control-url URL] [-hostname collector] [-statedir DIR] [-port N] [-listen 9999] [-v]
//
// Every flag left empty falls back to an environment variable: TS_AUTHKEY,
// TS_CONTROL_URL, TS_HOSTNAME, TS_STATE_DIR and TS_PORT. The hostname
// defaults to "collector", the name sensor_node sends to by default.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"
	"unicode"

	"github.com/microlink-go/microlink"
)

// Reading is one measurement of a sensor.
type Reading struct {
	Node         string
	Seq          uint64
	Time         time.Time
	TemperatureC float64
	UptimeS      float64
}

// maxDatagram bounds the size of a reading; larger datagrams are rejected.
const maxDatagram = 1024

func main() {
	var cfg microlink.Config
	flag.StringVar(&cfg.AuthKey, "authkey", "", "auth key (default $TS_AUTHKEY; none: log in interactively)")
	flag.StringVar(&cfg.ControlURL, "control-url", "", "control server URL (default $TS_CONTROL_URL, then Tailscale's)")
	flag.StringVar(&cfg.Hostname, "hostname", "", `name in the tailnet (default $TS_HOSTNAME, then "collector")`)
	flag.StringVar(&cfg.StateDir, "statedir", "", "directory keeping the node's identity (default $TS_STATE_DIR; none: a new node every run)")
	flag.IntVar(&cfg.Port, "port", 0, "local UDP port of the node (default $TS_PORT, then 41641; -1: any free port)")
	listen := flag.Uint("listen", 9999, "UDP port on the tailnet address to receive readings on")
	timeout := flag.Duration("timeout", 2*time.Minute, "how long to wait to join the tailnet")
	verbose := flag.Bool("v", false, "show microlink's own logs")
	flag.Parse()
	if flag.NArg() > 0 || *listen == 0 || *listen > math.MaxUint16 {
		flag.Usage()
		os.Exit(2)
	}
	if cfg.Hostname == "" && os.Getenv("TS_HOSTNAME") == "" {
		cfg.Hostname = "collector"
	}

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelDebug
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	cfg.OnAuthURL = func(url string) { log.Warn("to authorize this node, visit the login URL", "url", url) }

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, uint16(*listen), *timeout, os.Stdout, log); err != nil {
		log.Error("collector failed", "err", err)
		stop()
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg microlink.Config, port uint16, timeout time.Duration, out io.Writer, log *slog.Logger) error {
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
	c, err := n.ListenUDP(port)
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Fprintf(out, "collector %s listening on %s\n", n.Status().FQDN, netip.AddrPortFrom(n.IPv4(), port))
	stopRead := context.AfterFunc(ctx, func() { c.Close() })
	defer stopRead()

	last := make(map[string]uint64) // last seq seen per node
	buf := make([]byte, maxDatagram+1)
	for {
		nr, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil {
				log.Info("shutting down")
				return n.Close()
			}
			return fmt.Errorf("reading: %w", err)
		}
		peer := "?"
		if p, ok := n.Peer(from.Addr().String()); ok {
			peer = p.Name
		}
		r, err := parseReading(buf[:nr])
		if err != nil {
			fmt.Fprintf(out, "invalid reading from=%s %s: %v\n", peer, from, err)
			continue
		}
		line := fmt.Sprintf("reading node=%s seq=%d time=%s temperature_c=%.2f uptime_s=%.3f from=%s %s",
			r.Node, r.Seq, r.Time.Format(time.RFC3339Nano), r.TemperatureC, r.UptimeS, peer, from)
		if prev, ok := last[r.Node]; ok {
			switch {
			case r.Seq == prev+1:
			case r.Seq > prev+1:
				line += fmt.Sprintf(" note=\"missed %d\"", r.Seq-prev-1)
			default:
				line += " note=\"seq went back: sensor restarted or datagrams reordered\""
			}
		}
		last[r.Node] = r.Seq
		fmt.Fprintln(out, line)
	}
}

// parseReading decodes and checks one datagram: a single JSON object with
// every field of a reading, each in range. Unknown fields are ignored, so
// that sensors may add some.
func parseReading(b []byte) (Reading, error) {
	if len(b) > maxDatagram {
		return Reading{}, fmt.Errorf("datagram longer than %d bytes", maxDatagram)
	}
	var w struct {
		Node         *string    `json:"node"`
		Seq          *uint64    `json:"seq"`
		Time         *time.Time `json:"time"`
		TemperatureC *float64   `json:"temperature_c"`
		UptimeS      *float64   `json:"uptime_s"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&w); err != nil {
		return Reading{}, fmt.Errorf("not a JSON reading: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Reading{}, errors.New("data after the JSON object")
	}
	switch {
	case w.Node == nil:
		return Reading{}, errors.New(`missing "node"`)
	case w.Seq == nil:
		return Reading{}, errors.New(`missing "seq"`)
	case w.Time == nil:
		return Reading{}, errors.New(`missing "time"`)
	case w.TemperatureC == nil:
		return Reading{}, errors.New(`missing "temperature_c"`)
	case w.UptimeS == nil:
		return Reading{}, errors.New(`missing "uptime_s"`)
	}
	r := Reading{Node: *w.Node, Seq: *w.Seq, Time: *w.Time, TemperatureC: *w.TemperatureC, UptimeS: *w.UptimeS}
	switch {
	case !validName(r.Node):
		return Reading{}, fmt.Errorf("node name %q: want 1 to 63 letters, digits, '-', '_' or '.'", r.Node)
	case r.Seq == 0:
		return Reading{}, errors.New("seq 0: sequence numbers start at 1")
	case r.Time.IsZero():
		return Reading{}, errors.New("zero time")
	case r.TemperatureC < -90 || r.TemperatureC > 150:
		return Reading{}, fmt.Errorf("temperature %v °C out of range", r.TemperatureC)
	case r.UptimeS < 0:
		return Reading{}, fmt.Errorf("negative uptime %v s", r.UptimeS)
	}
	return r, nil
}

func validName(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for _, c := range s {
		if !unicode.IsLetter(c) && !unicode.IsDigit(c) && c != '-' && c != '_' && c != '.' {
			return false
		}
	}
	return true
}
