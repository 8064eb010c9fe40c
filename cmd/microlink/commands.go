package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/microlink-go/microlink"
	"github.com/microlink-go/microlink/internal/h1"
)

func runUp(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("up", commands()[0].usage, stderr)
	authKey := fs.String("authkey", "", "auth key to register the node (default $TS_AUTHKEY; empty: interactive login)")
	hostname := fs.String("hostname", "", "name of this node in the tailnet (default the OS host name)")
	loginServer := fs.String("login-server", "", "control server URL (default $TS_CONTROL_URL, then "+microlink.DefaultControlURL+")")
	statedir := fs.String("statedir", "", "directory for the node's identity and peer cache (default $TS_STATE_DIR)")
	port := fs.Int("port", 0, fmt.Sprintf("UDP port for WireGuard, disco and STUN (default %d, or any free port if busy)", microlink.DefaultPort))
	socket := fs.String("socket", "", "local API socket (default <statedir>/microlink.sock)")
	verbose := fs.Bool("verbose", false, "log debug messages")
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
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	cfg := microlink.Config{
		AuthKey: *authKey, Hostname: *hostname, ControlURL: *loginServer, StateDir: *statedir, Port: *port,
		Logger: logger,
		OnAuthURL: func(u string) {
			fmt.Fprintf(stderr, "\nTo authorize this node, visit:\n\n\t%s\n\n", u)
		},
	}
	n, err := microlink.New(cfg)
	if err != nil {
		return err
	}
	defer n.Close()

	sockPath, err := socketPath(*socket, n.StateDir())
	if err != nil && *socket == "" && n.StateDir() == "" {
		sockPath, err = "", nil // no state dir: run without a local API
		logger.Warn("no --statedir or --socket: the local API (status, ping) is off")
	}
	if err != nil {
		return err
	}
	rebind := func() error {
		if err := n.Rebind(); err != nil {
			logger.Warn("rebind failed", "err", err)
			return err
		}
		logger.Info("rebound: UDP socket reopened, endpoints and relay connections renewed")
		return nil
	}
	var loggedOut = make(chan struct{})
	if sockPath != "" {
		ln, err := listenUnix(sockPath)
		if err != nil {
			return err
		}
		srv := h1.Serve(ln, localAPI(n, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			if err := n.Logout(ctx); err != nil {
				return err
			}
			close(loggedOut)
			return nil
		}, rebind), h1.ServerOptions{})
		defer func() {
			srv.Close()
			os.Remove(sockPath)
		}()
		logger.Info("local API listening", "socket", sockPath)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hangups := make(chan os.Signal, 1)
	signal.Notify(hangups, syscall.SIGHUP)
	defer signal.Stop(hangups)
	hupDone := make(chan struct{})
	go func() {
		defer close(hupDone)
		rebindOnHangup(ctx, hangups, rebind)
	}()
	defer func() { stop(); <-hupDone }()
	n.Watch(func(ev microlink.Event) {
		if ev.PeersChanged {
			return
		}
		switch {
		case ev.State == microlink.NeedsApproval:
			logger.Warn("registered; waiting for an administrator to approve this device in the tailnet's admin console")
		case ev.State == microlink.Connecting && ev.Err != nil:
			logger.Warn("cannot reach or use the control server; retrying", "server", n.ControlURL(), "err", ev.Err)
		}
	})
	if err := n.Start(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		var re *microlink.RegistrationError
		if errors.As(err, &re) {
			return fmt.Errorf("%v\n(check the auth key given with --authkey or TS_AUTHKEY: it may be mistyped, expired, revoked or already used; a key made for another control server does not work with %s)", err, n.ControlURL())
		}
		return err
	}
	logger.Info("up", "hostname", n.Status().Hostname, "ipv4", n.IPv4(), "ipv6", n.IPv6())
	select {
	case <-ctx.Done():
		logger.Info("shutting down")
	case <-loggedOut:
		logger.Info("logged out; identity removed")
	}
	return nil
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
	path, err := socketPath(*socket, *statedir)
	if err != nil {
		return err
	}
	var st statusJSON
	if err := newClient(path).do("GET", "/status", &st); err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	printStatus(stdout, st)
	return nil
}

func printStatus(w io.Writer, st statusJSON) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	addrs := func(a []string) string {
		if len(a) == 0 {
			return "-"
		}
		return a[0]
	}
	fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", addrs(st.Self.Addresses), st.Self.Name, "self", st.State)
	if st.AuthURL != "" {
		fmt.Fprintf(tw, "\tlog in at:\t%s\t\n", st.AuthURL)
	}
	for _, p := range st.Peers {
		online := "offline"
		if p.Online {
			online = "online"
		}
		if p.Expired {
			online = "expired"
		}
		path := "-"
		switch p.Path {
		case "direct":
			path = "direct " + p.Endpoint
		case "derp":
			path = fmt.Sprintf("relay %d", p.DERPRegion)
		}
		lat := "-"
		if p.LatencyMS > 0 {
			lat = fmt.Sprintf("%.2fms", p.LatencyMS)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\trx %d tx %d\n", addrs(p.Addresses), p.Name, p.OS, online, path, lat, p.RxBytes, p.TxBytes)
	}
	tw.Flush()
	if s := st.Stats; s.DirectPacketsIn+s.DirectPacketsOut+s.DERPPacketsIn+s.DERPPacketsOut > 0 {
		fmt.Fprintf(w, "\nWireGuard bytes: direct rx %d tx %d, relayed rx %d tx %d\n",
			s.DirectBytesIn, s.DirectBytesOut, s.DERPBytesIn, s.DERPBytesOut)
	}
	if st.Error != "" {
		fmt.Fprintf(w, "\n# Control server unreachable or refusing; retrying. Last error:\n#     %s\n", st.Error)
	}
	if len(st.Health) > 0 {
		fmt.Fprintf(w, "\n# Health check:\n")
		for _, h := range st.Health {
			fmt.Fprintf(w, "#     - %s\n", h)
		}
	}
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
	path, err := socketPath(*socket, *statedir)
	if err != nil {
		return err
	}
	c := newClient(path)
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
	path, err := socketPath(*socket, *statedir)
	if err != nil {
		return err
	}
	if err := newClient(path).do("POST", "/logout", nil); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "logged out: the node's key is expired and its identity removed")
	return nil
}
