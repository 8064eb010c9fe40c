package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/microlink-go/microlink"
	"github.com/microlink-go/microlink/internal/h1"
)

func runUp(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("up", commands()[0].usage, stderr)
	authKey := fs.String("authkey", "", "auth key to register the node (default $TS_AUTHKEY; empty: interactive login)")
	hostname := fs.String("hostname", "", "name of this node in the tailnet (default $TS_HOSTNAME, then the OS host name)")
	loginServer := fs.String("login-server", "", "control server URL (default $TS_CONTROL_URL, then "+microlink.DefaultControlURL+")")
	statedir := fs.String("statedir", "", "directory for the node's identity and peer cache (default $TS_STATE_DIR)")
	fresh := fs.Bool("fresh-identity", false, "if the identity in --statedir belongs to another control server than --login-server, replace it with a new one")
	port := fs.Int("port", 0, fmt.Sprintf("UDP port for WireGuard, disco and STUN (default $TS_PORT, then %d, or any free port if busy)", microlink.DefaultPort))
	socket := fs.String("socket", "", "local API socket (default <statedir>/microlink.sock)")
	tags := fs.String("advertise-tags", "", "ACL tags to request for this node, comma-separated (tag:a,tag:b)")
	shieldsUp := fs.Bool("shields-up", false, "refuse every connection peers start to this node")
	socks := fs.String("socks5-server", "", "serve a SOCKS5 proxy into the tailnet on [USER:PASS@]ADDR:PORT (such as localhost:1080)")
	httpProxy := fs.String("outbound-http-proxy-listen", "", "serve an HTTP proxy into the tailnet on ADDR:PORT (such as localhost:8080)")
	webListen := fs.String("web-listen", "", "serve a status page and /metrics on ADDR:PORT (such as 127.0.0.1:8088); other than loopback needs a token")
	webToken := fs.String("web-token", "", "token the status page asks for (default the file web-token in the state directory)")
	verbose := fs.Bool("verbose", false, "log debug messages")
	var tunName tunFlag
	fs.Var(&tunName, "tun", "TUN mode: create a TUN device (--tun for "+microlink.DefaultTUN+", --tun=NAME) so that the host's own programs reach the tailnet; Linux, as root")
	acceptRoutes := fs.Bool("accept-routes", false, "use the subnet routes other nodes offer")
	acceptDNS := fs.Bool("accept-dns", false, "with --tun, point the host's resolver at MagicDNS (100.100.100.100) while running")
	exitNode := fs.String("exit-node", "", "send traffic for addresses outside the tailnet through this peer (name or tailnet IP)")
	exitLAN := fs.Bool("exit-node-allow-lan-access", false, "with --exit-node in TUN mode, keep reaching the host's own LANs directly")
	advertiseRoutes := fs.String("advertise-routes", "", "offer routes to these networks to the tailnet (CIDR,CIDR,...)")
	advertiseExit := fs.Bool("advertise-exit-node", false, "offer this node as an exit node")
	snat := fs.Bool("snat-subnet-routes", true, "in TUN mode, give traffic forwarded to advertised routes this host's address as its source")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "microlink up: unexpected argument %q\n", fs.Arg(0))
		return errUsage
	}
	if *port < 0 || *port > 65535 {
		fmt.Fprintf(stderr, "microlink up: --port %d is not a port number (0-65535)\n", *port)
		return errUsage
	}
	var tagList []string
	for _, t := range strings.Split(*tags, ",") {
		if t = strings.TrimSpace(t); t != "" {
			tagList = append(tagList, t)
		}
	}
	socksCfg, err := parseSOCKSFlag(*socks)
	if err != nil {
		fmt.Fprintf(stderr, "microlink up: --socks5-server: %v\n", err)
		return errUsage
	}
	routes, err := parseRoutes(*advertiseRoutes, *advertiseExit)
	if err != nil {
		fmt.Fprintf(stderr, "microlink up: --advertise-routes: %v\n", err)
		return errUsage
	}

	// A daemon already serving this state directory is brought up again
	// (after "microlink down"), as "tailscale up" does.
	if path, err := socketPath(*socket, *statedir); err == nil && daemonRunning(path) {
		var changed []string
		fs.Visit(func(f *flag.Flag) {
			if f.Name != "socket" && f.Name != "statedir" {
				changed = append(changed, "--"+f.Name)
			}
		})
		if err := newClient(path).do("POST", "/up", nil); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "microlink is up")
		if len(changed) > 0 {
			fmt.Fprintf(stderr, "note: the running daemon keeps its settings; %s apply when it is restarted\n", strings.Join(changed, " "))
		}
		return nil
	}

	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	cfg := microlink.Config{
		AuthKey: *authKey, Hostname: *hostname, ControlURL: *loginServer, StateDir: *statedir, Port: *port,
		Tags: tagList, ShieldsUp: *shieldsUp, FreshIdentity: *fresh,
		TUN: string(tunName), AcceptRoutes: *acceptRoutes, AcceptDNS: *acceptDNS, ExitNode: *exitNode, ExitNodeAllowLANAccess: *exitLAN,
		AdvertiseRoutes: routes, NoSNAT: !*snat,
		Logger: logger,
		OnAuthURL: func(u string) {
			fmt.Fprintf(stderr, "\nTo authorize this node, visit:\n\n\t%s\n\n", u)
		},
	}
	if err := cfg.ApplyEnv(); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d, err := newDaemon(ctx, cfg, logger)
	var me *microlink.ControlMismatchError
	if errors.As(err, &me) {
		return fmt.Errorf("the identity in %s belongs to control server %s, not %s\n"+
			"(use --login-server %s, another --statedir, or --fresh-identity to discard that identity and register anew with %s)",
			me.StateDir, me.StateURL, me.ControlURL, me.StateURL, me.ControlURL)
	}
	if err != nil {
		return err
	}
	defer d.close()
	n := d.node()

	sockPath, err := socketPath(*socket, n.StateDir())
	if err != nil && *socket == "" && n.StateDir() == "" {
		sockPath, err = "", nil // no state dir: run without a local API
		logger.Warn("no --statedir or --socket: the local API (status, ping) is off")
	}
	if err != nil {
		return err
	}
	if sockPath != "" {
		ln, err := listenUnix(sockPath)
		if err != nil {
			return err
		}
		srv := h1.Serve(ln, localAPI(d), h1.ServerOptions{})
		defer func() {
			srv.Close()
			os.Remove(sockPath)
		}()
		logger.Info("local API listening", "socket", sockPath)
	}
	stopServices, err := startServices(d, services{socks: socksCfg, socksAddr: *socks, httpProxy: *httpProxy, webListen: *webListen, webToken: *webToken, stateDir: n.StateDir()})
	if err != nil {
		return err
	}
	defer stopServices()

	hangups := make(chan os.Signal, 1)
	signal.Notify(hangups, syscall.SIGHUP)
	defer signal.Stop(hangups)
	hupDone := make(chan struct{})
	go func() {
		defer close(hupDone)
		rebindOnHangup(ctx, hangups, d.rebind)
	}()
	defer func() { stop(); <-hupDone }()
	if err := n.Start(ctx); err != nil {
		if ctx.Err() != nil || errors.Is(err, microlink.ErrClosed) {
			// Interrupted, or "down" while starting: the daemon goes on
			// until a signal.
			if ctx.Err() != nil {
				return nil
			}
		} else {
			var re *microlink.RegistrationError
			if errors.As(err, &re) {
				return fmt.Errorf("%v\n(check the auth key given with --authkey or TS_AUTHKEY: it may be mistyped, expired, revoked or already used; a key made for another control server does not work with %s)", err, n.ControlURL())
			}
			return err
		}
	} else {
		logger.Info("up", "hostname", n.Status().Hostname, "ipv4", n.IPv4(), "ipv6", n.IPv6(), "version", microlink.VersionString())
	}
	select {
	case <-ctx.Done():
		logger.Info("shutting down")
	case <-d.loggedOut:
		logger.Info("logged out; identity removed")
	}
	return nil
}

// daemonRunning reports whether a daemon answers on the socket at path.
func daemonRunning(path string) bool {
	c, err := net.DialTimeout("unix", path, 200*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// tunFlag is --tun: alone it names the default device, --tun=NAME another.
type tunFlag string

func (f *tunFlag) String() string   { return string(*f) }
func (f *tunFlag) IsBoolFlag() bool { return true }
func (f *tunFlag) Set(s string) error {
	switch s {
	case "true":
		*f = microlink.DefaultTUN
	case "false", "":
		*f = ""
	default:
		*f = tunFlag(s)
	}
	return nil
}

// parseRoutes parses --advertise-routes, adding the exit routes for
// --advertise-exit-node.
func parseRoutes(list string, exit bool) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR prefix such as 192.168.1.0/24", s)
		}
		out = append(out, p)
	}
	if exit {
		out = append(out, netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0"))
	}
	return out, nil
}

// rebindOnHangup calls rebind for every signal on hangups until ctx is
// done: "kill -HUP" tells a running node that its network changed.
func rebindOnHangup(ctx context.Context, hangups <-chan os.Signal, rebind func() error) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hangups:
			rebind() // logs its result
		}
	}
}

func addSocketFlags(fs interface {
	String(name, value, usage string) *string
}) (socket, statedir *string) {
	socket = fs.String("socket", "", "local API socket of the running node")
	statedir = fs.String("statedir", "", "state directory of the running node (its socket is <statedir>/microlink.sock)")
	return
}

func runStatus(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("status", commands()[1].usage, stderr)
	asJSON := fs.Bool("json", false, "print the full status as JSON")
	socket, statedir := addSocketFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	c, err := daemonClient(*socket, *statedir)
	if err != nil {
		return err
	}
	var st statusJSON
	if err := c.do("GET", "/status", &st); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, st)
	}
	printStatus(stdout, st)
	return nil
}

func runPing(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("ping", commands()[2].usage, stderr)
	tsmp := fs.Bool("tsmp", false, "ping through WireGuard with TSMP, answered by the peer's Tailscale client")
	icmp := fs.Bool("icmp", false, "ping through WireGuard with ICMP echo, answered by the peer's IP stack")
	count := fs.Int("c", 4, "number of pings (0: until interrupted)")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for each answer")
	socket, statedir := addSocketFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "microlink ping: want exactly one NAME or IP")
		fs.Usage()
		return errUsage
	}
	if *tsmp && *icmp {
		fmt.Fprintln(stderr, "microlink ping: --tsmp and --icmp exclude each other")
		return errUsage
	}
	if *count < 0 || *timeout <= 0 {
		fmt.Fprintln(stderr, "microlink ping: -c must be >= 0 and --timeout > 0")
		return errUsage
	}
	typ := "disco"
	if *tsmp {
		typ = "TSMP"
	} else if *icmp {
		typ = "ICMP"
	}
	c, err := daemonClient(*socket, *statedir)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ok := 0
	for i := 0; *count == 0 || i < *count; i++ {
		if i > 0 {
			select {
			case <-ctx.Done():
				return pingSummary(ok, i)
			case <-time.After(time.Second):
			}
		}
		var res pingJSON
		if err := c.do("POST", "/ping"+pingQuery(fs.Arg(0), typ, *timeout), &res); err != nil {
			fmt.Fprintf(stdout, "ping %s: %v\n", fs.Arg(0), err)
			continue
		}
		ok++
		via := ""
		switch {
		case res.Endpoint != "":
			via = " via " + res.Endpoint
		case res.DERPRegion != 0:
			via = fmt.Sprintf(" via DERP(%d)", res.DERPRegion)
		case typ != "disco":
			via = " via " + typ
		}
		fmt.Fprintf(stdout, "pong from %s (%s)%s in %.2fms\n", res.Peer, res.IP, via, res.LatencyMS)
	}
	return pingSummary(ok, *count)
}

func pingSummary(ok, sent int) error {
	if ok == 0 {
		return errors.New("no reply")
	}
	return nil
}

func runLogout(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("logout", commands()[3].usage, stderr)
	socket, statedir := addSocketFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	c, err := daemonClient(*socket, *statedir)
	if err != nil {
		return err
	}
	if err := c.do("POST", "/logout", nil); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "logged out: the node's key is expired and its identity removed")
	return nil
}
