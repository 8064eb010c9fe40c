// Soak runs a microlink node and a real tailscaled in an offline lab for a
// long time, with traffic and faults, and reports whether the node stays
// healthy: memory, goroutines and open files flat, probes answered, and
// how fast it recovers from each fault.
//
// Usage (as root; scripts/soak.sh DURATION wraps it):
//
//	go build -o /tmp/s/soak ./cmd/soak && go build -o /tmp/s/soaknode ./cmd/soak/soaknode
//	/tmp/s/soak -duration 1h [-out report.md] [-samples samples.jsonl]
//
// The program moves itself into a private network namespace, which plays
// the internet: the lab's control, STUN and a DERP server of its own listen
// on 198.18.0.1. Two hosts hang off it by veth pairs, each in a namespace
// of its own: microlink's (198.18.1.2) and tailscaled's (198.18.2.2, TUN
// mode). The microlink node is soaknode (./soaknode, which soak.sh
// builds next to this program): a node with a UDP echo on port 9000 and
// nothing else linked in, whose goroutines, heap, RSS and open files are
// read each minute.
//
// Every 10 s tailscaled's host pings microlink's tailnet address (the OS
// ping, through tailscaled's TUN) and sends it a UDP datagram to echo.
// Every 5 minutes a fault is injected, in turn: control restart (every
// connection dropped), DERP restart (down for 5 s, its state lost), path
// cut (UDP between the hosts dropped for 60 s, so traffic must move to
// DERP and back) and address change (microlink's host renumbered without
// telling the node). After each fault the program probes every second
// until traffic flows, and measures the fault's own recovery: control's
// map stream back, the DERP connection back, the direct path back, the
// new endpoint at control. Each minute it records the node's goroutines,
// live heap (after a collection the node runs for the sample), RSS, open
// files and the probes of that minute.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/microlink-go/microlink/interop/lab"
)

type options struct {
	Duration, FaultEvery, ProbeEvery, SampleEvery time.Duration
	Out, Samples                                  string
	Faults, Replay, Label                         string
	NodeBin                                       string
	Verbose, NodeDebug                            bool
}

func main() {
	var o options
	flag.DurationVar(&o.Duration, "duration", time.Hour, "how long to run")
	flag.DurationVar(&o.FaultEvery, "fault-every", 5*time.Minute, "time between faults")
	flag.DurationVar(&o.ProbeEvery, "probe-every", 10*time.Second, "time between probes")
	flag.DurationVar(&o.SampleEvery, "sample-every", time.Minute, "time between resource samples")
	flag.StringVar(&o.Out, "out", "", "write the report (markdown) to this file as well as to stdout")
	flag.StringVar(&o.Samples, "samples", "", "write every sample, probe and fault as JSON lines to this file")
	flag.StringVar(&o.Faults, "faults", "control,derp,cut,address", "the faults to inject, in turn: control (restart), derp (restart), cut (of the direct path), address (change)")
	flag.BoolVar(&o.Verbose, "verbose", false, "show the lab's logs")
	flag.BoolVar(&o.NodeDebug, "node-debug", false, "log the node at debug level (in node.log)")
	flag.StringVar(&o.NodeBin, "node-bin", "", "the soaknode program (default: soaknode next to this program)")
	flag.StringVar(&o.Label, "label", "", "what was soaked (a commit), for the report's title")
	flag.StringVar(&o.Replay, "replay", "", "print the report of an earlier run from its -samples file instead of running (give that run's -duration)")
	flag.Parse()
	if flag.NArg() > 0 || o.Duration <= 0 {
		flag.Usage()
		os.Exit(2)
	}
	if o.Replay != "" {
		rep, err := replay(o.Replay, o)
		if err != nil {
			fmt.Fprintln(os.Stderr, "soak:", err)
			os.Exit(1)
		}
		fmt.Print(rep.markdown())
		if !rep.goalsMet() {
			os.Exit(3)
		}
		return
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "soak: needs root (network namespaces, nftables, TUN)")
		os.Exit(2)
	}
	if o.NodeBin == "" {
		self, err := os.Executable()
		if err != nil {
			fmt.Fprintln(os.Stderr, "soak:", err)
			os.Exit(1)
		}
		o.NodeBin = filepath.Join(filepath.Dir(self), "soaknode")
	}
	if _, err := os.Stat(o.NodeBin); err != nil {
		fmt.Fprintf(os.Stderr, "soak: the node program: %v (go build -o %s ./cmd/soak/soaknode)\n", err, o.NodeBin)
		os.Exit(2)
	}
	if ran, code := lab.ReexecInNetns(); ran {
		os.Exit(code)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := run(ctx, o)
	if rep != nil {
		text := rep.markdown()
		fmt.Print(text)
		if o.Out != "" {
			if werr := os.WriteFile(o.Out, []byte(text), 0o644); werr != nil {
				fmt.Fprintln(os.Stderr, "soak:", werr)
			}
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak failed:", err)
		os.Exit(1)
	}
	if rep != nil && !rep.goalsMet() {
		os.Exit(3)
	}
}
