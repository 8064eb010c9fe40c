// Command microlink runs a small Tailscale node and talks to a running one.
//
//	microlink up       --authkey KEY --hostname NAME --login-server URL --statedir DIR [--port N] [--socket PATH]
//	                   [--advertise-tags TAGS] [--shields-up] [--socks5-server [U:P@]ADDR]
//	                   [--outbound-http-proxy-listen ADDR] [--web-listen ADDR] [--web-token T]
//	                   [--tun[=NAME] [--accept-dns]] [--accept-routes] [--exit-node=NAME|IP [--exit-node-allow-lan-access]]
//	                   [--advertise-routes=CIDR,...] [--advertise-exit-node] [--snat-subnet-routes=false]
//	microlink status   [--json] [--socket PATH | --statedir DIR]
//	microlink ping     [--tsmp|--icmp] [-c N] NAME|IP
//	microlink ip       [-4|-6] [PEER]
//	microlink whois    [--json] IP[:PORT]
//	microlink netcheck [--json]
//	microlink down     (and "up" again on the running daemon)
//	microlink logout   [--socket PATH | --statedir DIR]
//	microlink version
//
// "up" runs in the foreground until SIGINT or SIGTERM and serves a local API
// on a unix socket (default <statedir>/microlink.sock, mode 0600) that the
// other commands use. SIGHUP (or POST /rebind on the local API) tells it
// that the network changed: it reopens its UDP socket, renews its DERP
// connections and reports its new endpoints, keeping its identity.
//
// With --tun (Linux, root) "up" creates a TUN device and routes the
// tailnet, accepted subnet routes and, with --exit-node, the default route
// into it, so that the host's own programs use the tailnet; everything it
// adds to the host is removed when it exits, and what a killed run left is
// removed when the next one starts.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/microlink-go/microlink"
)

type command struct {
	name, usage, summary string
	run                  func(args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"up", "up --authkey KEY --hostname NAME --login-server URL --statedir DIR [--port N] [--socket PATH] [--advertise-tags TAGS] [--shields-up] [--socks5-server ADDR] [--outbound-http-proxy-listen ADDR] [--web-listen ADDR] [--tun[=NAME] [--accept-dns]] [--accept-routes] [--exit-node=NAME|IP] [--advertise-routes=CIDR,...] [--advertise-exit-node] [--fresh-identity]", "join the tailnet and run in the foreground (or bring a running daemon up again)", runUp},
		{"status", "status [--json] [--socket PATH | --statedir DIR]", "show this node and its peers", runStatus},
		{"ping", "ping [--tsmp|--icmp] [-c N] [--timeout D] NAME|IP", "ping a peer through the tailnet", runPing},
		{"logout", "logout [--socket PATH | --statedir DIR]", "expire this node's key and forget its identity", runLogout},
		{"version", "version", "print the version", runVersion},
		{"down", "down [--socket PATH | --statedir DIR]", "disconnect from the tailnet; the daemon stays for 'up'", runDown},
		{"ip", "ip [-4|-6] [PEER] [--socket PATH | --statedir DIR]", "print this node's (or a peer's) tailnet addresses", runIP},
		{"whois", "whois [--json] IP[:PORT] [--socket PATH | --statedir DIR]", "tell the node, user and tags behind a tailnet address", runWhois},
		{"netcheck", "netcheck [--json] [--socket PATH | --statedir DIR]", "measure UDP, NAT behaviour and DERP latency", runNetcheck},
	}
}

// usageOf returns the usage line of the named command.
func usageOf(name string) string {
	for _, c := range commands() {
		if c.name == name {
			return c.usage
		}
	}
	return name
}

// errUsage means the command line was wrong; the message was already printed.
var errUsage = errors.New("usage")

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name == args[0] {
			err := c.run(args[1:], stdout, stderr)
			switch {
			case err == nil:
				return 0
			case errors.Is(err, flag.ErrHelp):
				return 0
			case errors.Is(err, errUsage):
				return 2
			default:
				fmt.Fprintf(stderr, "microlink %s: %v\n", c.name, err)
				return 1
			}
		}
	}
	fmt.Fprintf(stderr, "microlink: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: microlink <command> [flags]")
	fmt.Fprintln(w)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'microlink <command> --help' for a command's flags.")
}

// newFlagSet returns a flag set that prints errors and help to stderr and
// reports bad flags as errUsage.
func newFlagSet(name, usageLine string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: microlink %s\n\n", usageLine)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args, allowing flags after positional arguments
// ("ping laptop -c 3"); the positional arguments are left in fs.Args().
func parseFlags(fs *flag.FlagSet, args []string) error {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return err
			}
			return errUsage
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	return fs.Parse(append([]string{"--"}, positional...))
}

func runVersion(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("version", "version", stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "microlink %s\n", microlink.VersionString())
	return nil
}
