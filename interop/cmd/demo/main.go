// Demo starts an offline tailnet on this machine with real Tailscale code
// (control server, DERP relay, STUN server and a real tailscaled), joins
// a microlink node to it from this Go program and runs the microlink
// command's daemon, "microlink up", as a router would. It shows step by
// step what each side sees: peer lists and status, pings in both
// directions and UDP datagrams each way; then a summary of the steps,
// passed, failed or skipped (with the reason), and their times. If
// "microlink up" has --tun, programs on the router reach the real peer
// through the daemon's TUN device; if it has --socks5-server, curl fetches
// a page by MagicDNS name through the daemon's proxies.
//
// Usage:
//
//	go run ./cmd/demo [--derp-only] [--userspace] [--verbose]
//
// Run as root with the ip command present, it moves itself into a private
// network namespace, where the real tailscaled gets a TUN device so that
// OS commands (ping) and ordinary sockets reach microlink's 100.x address,
// and "microlink up" gets a namespace of its own linked to it by veth.
// Otherwise the tailscaled uses userspace networking, the UDP step talks
// to an in-process tsnet peer instead, "microlink up" shares this host's
// network, and the steps that need root are skipped; the demo names them,
// and why, before it starts.
//
// It exits with status 1 if any step fails, naming the steps that did.
// The tailscaled and tailscale binaries come from lab.Binaries: set
// MICROLINK_TS_BIN to skip building them. The microlink command is built
// from this tree at every run.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/microlink-go/microlink/interop/lab"
)

func main() {
	var opts options
	flag.BoolVar(&opts.DERPOnly, "derp-only", false, "keep the real peer off direct UDP (TS_DEBUG_NEVER_DIRECT_UDP): all traffic goes through DERP")
	flag.BoolVar(&opts.Userspace, "userspace", false, "run the real peer with userspace networking even when a TUN device is possible")
	flag.BoolVar(&opts.Verbose, "verbose", false, "show the logs of microlink (info level) and of the lab")
	flag.Parse()
	if flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}

	if ran, code := lab.ReexecInNetns(); ran {
		os.Exit(code)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	opts.Log = os.Stderr
	if err := run(ctx, opts, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "demo failed: %v\n", err)
		stop()
		os.Exit(1)
	}
}
