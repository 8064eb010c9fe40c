// Offlinelab runs a private tailnet on this machine, with no internet
// access needed, for trying microlink's example programs: the control,
// DERP and STUN servers of tailscale.com and a real tailscaled as a peer,
// all on 127.0.0.1. It prints the TS_CONTROL_URL and TS_AUTHKEY to join
// with and runs until interrupted.
//
// Usage (from the interop module directory):
//
//	go run ./examplestest/offlinelab [-peer real-peer] [-env FILE] [-derp-only] [-v]
//
// then, in another shell:
//
//	export TS_CONTROL_URL=… TS_AUTHKEY=…   # as printed, or: . FILE
//	go run ../examples/basic_connect
//
// Unlike the interop tests it stays in the host's network namespace, so
// that programs started from other shells reach its servers; it only
// listens on 127.0.0.1. The tailscaled and tailscale binaries come from
// lab.Binaries: set MICROLINK_TS_BIN to skip building them.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/microlink-go/microlink/interop/lab"
	"tailscale.com/tstest/integration/testcontrol"
)

func main() {
	peer := flag.String("peer", "real-peer", "hostname of the real tailscaled peer to start (empty: none)")
	envFile := flag.String("env", "", "also write the export lines to this file, to source from another shell")
	derpOnly := flag.Bool("derp-only", false, "keep the real peer off direct UDP: all its traffic goes through DERP")
	verbose := flag.Bool("v", false, "show the logs of the lab's servers")
	flag.Parse()
	if flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *peer, *envFile, *derpOnly, *verbose, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "offlinelab: %v\n", err)
		stop()
		os.Exit(1)
	}
}

func run(ctx context.Context, peer, envFile string, derpOnly, verbose bool, out io.Writer) error {
	logf := func(string, ...any) {}
	// Some of the lab's servers log through the standard logger.
	log.SetOutput(io.Discard)
	if verbose {
		logf = log.New(os.Stderr, "", log.LstdFlags).Printf
		log.SetOutput(os.Stderr)
	}
	r := lab.NewRunner("offlinelab", logf)
	defer r.Close()

	var l *lab.Lab
	var ts *lab.Tailscaled
	err := r.Do(func() {
		l = lab.Start(r, lab.Options{
			// testcontrol leaves peers' Online unset unless told.
			ConfigureControl: func(s *testcontrol.Server) { s.AllOnline = true },
		})
		if peer != "" {
			ts = l.StartTailscaled(r, lab.TSOptions{Hostname: peer, NeverDirect: derpOnly})
		}
	})
	if err != nil {
		return err
	}
	exports := fmt.Sprintf("export TS_CONTROL_URL=%s\nexport TS_AUTHKEY=%s\n", l.ControlURL, l.AuthKey)
	if envFile != "" {
		if err := os.WriteFile(envFile, []byte(exports), 0o600); err != nil {
			return err
		}
		defer os.Remove(envFile)
	}
	fmt.Fprintf(out, "offline tailnet ready (tailscale.com %s): control %s, DERP %s, STUN %s\n",
		lab.TailscaleVersion, l.ControlURL, l.DERPURL, l.STUNAddr)
	if ts != nil {
		_, cli, _ := lab.Binaries()
		fmt.Fprintf(out, "real peer %q at %s; its CLI: %s --socket=%s status\n", ts.Hostname, ts.IPv4(), cli, ts.Socket)
	}
	fmt.Fprintf(out, "join it from another shell with:\n%s", exports)
	fmt.Fprintf(out, "press Ctrl-C to stop\n")
	<-ctx.Done()
	fmt.Fprintf(out, "stopping\n")
	return r.Close()
}
