// http_service joins a tailnet and serves HTTP on its tailnet address. It
// greets each caller by the name, user and tags that the tailnet gives the
// caller's address (Node.WhoIs), so a service can authorize callers
// without passwords. With -fetch it also fetches a URL through the tailnet
// (the httpclient package) and prints the answer, which shows that a
// program can reach its peers by MagicDNS name.
//
// Usage:
//
//	http_service [-authkey KEY] [-control-url URL] [-hostname NAME] [-statedir DIR] [-port N] [-listen 80] [-fetch URL] [-v]
//
// Output, one line per event:
//
//	serving http://NAME.TAILNET:PORT/ (100.64.0.3:PORT)
//	fetched URL: 200 OK, 13 bytes: hello, world
//	request from NAME (LOGIN) 100.64.0.2:53211 GET /
//
// Every flag left empty falls back to an environment variable: TS_AUTHKEY,
// TS_CONTROL_URL, TS_HOSTNAME, TS_STATE_DIR and TS_PORT.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/microlink-go/microlink"
	"github.com/microlink-go/microlink/httpclient"
)

func main() {
	var cfg microlink.Config
	flag.StringVar(&cfg.AuthKey, "authkey", "", "auth key (default $TS_AUTHKEY; none: log in interactively)")
	flag.StringVar(&cfg.ControlURL, "control-url", "", "control server URL (default $TS_CONTROL_URL, then Tailscale's)")
	flag.StringVar(&cfg.Hostname, "hostname", "", "name in the tailnet (default $TS_HOSTNAME, then the OS host name)")
	flag.StringVar(&cfg.StateDir, "statedir", "", "directory keeping the node's identity (default $TS_STATE_DIR; none: a new node every run)")
	flag.IntVar(&cfg.Port, "port", 0, "local UDP port of the node (default $TS_PORT, then 41641; -1: any free port)")
	listen := flag.Uint("listen", 80, "TCP port on the tailnet address to serve HTTP on")
	fetch := flag.String("fetch", "", "a URL to fetch through the tailnet once joined, such as http://laptop:8080/")
	timeout := flag.Duration("timeout", 2*time.Minute, "how long to wait to join the tailnet")
	verbose := flag.Bool("v", false, "show microlink's own logs")
	flag.Parse()
	if flag.NArg() > 0 || *listen == 0 || *listen > math.MaxUint16 {
		flag.Usage()
		os.Exit(2)
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
	if err := run(ctx, cfg, uint16(*listen), *fetch, *timeout, &syncWriter{w: os.Stdout}, log); err != nil {
		log.Error("http_service failed", "err", err)
		stop()
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg microlink.Config, port uint16, fetch string, timeout time.Duration, out io.Writer, log *slog.Logger) error {
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
	ln, err := n.ListenTCP(port)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: greeter(n, out), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	fmt.Fprintf(out, "serving http://%s:%d/ (%s)\n", n.Status().FQDN, port, net.JoinHostPort(n.IPv4().String(), fmt.Sprint(port)))

	if fetch != "" {
		if err := fetchOnce(ctx, n, fetch, out); err != nil {
			fmt.Fprintf(out, "fetch %s failed: %v\n", fetch, err)
		}
	}
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err := <-served:
		return err
	}
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	srv.Shutdown(sctx)
	return n.Close()
}

// greeter answers every request with the caller's tailnet identity.
func greeter(n *microlink.Node, out io.Writer) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		who, err := n.WhoIs(r.RemoteAddr)
		if err != nil {
			http.Error(w, "who are you? "+err.Error(), http.StatusForbidden)
			return
		}
		name, login := who.Node.Name, who.User.LoginName
		if len(who.Tags) > 0 {
			login = strings.Join(who.Tags, ",")
		}
		fmt.Fprintf(out, "request from %s (%s) %s %s %s\n", name, login, r.RemoteAddr, r.Method, r.URL.Path)
		fmt.Fprintf(w, "hello, %s (%s): you asked for %s\n", name, login, r.URL.Path)
	})
}

// fetchOnce fetches url through the tailnet and prints the status and the
// first line of the body.
func fetchOnce(ctx context.Context, n *microlink.Node, url string, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return err
	}
	hc := httpclient.New(n)
	defer hc.CloseIdleConnections()
	res, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	first, _, _ := strings.Cut(string(body), "\n")
	sc := bufio.NewScanner(strings.NewReader(first))
	sc.Scan()
	fmt.Fprintf(out, "fetched %s: %s, %d bytes: %s\n", url, res.Status, len(body), sc.Text())
	return nil
}

// syncWriter serializes lines written from several goroutines.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(b)
}
