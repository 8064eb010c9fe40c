package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/microlink-go/microlink/internal/proxy"
	"github.com/microlink-go/microlink/internal/web"
)

// socksFlag is --socks5-server: [USER:PASS@]ADDR:PORT.
type socksFlag struct {
	user, pass, addr string
}

func parseSOCKSFlag(s string) (socksFlag, error) {
	if s == "" {
		return socksFlag{}, nil
	}
	var f socksFlag
	if cred, addr, ok := strings.Cut(s, "@"); ok {
		user, pass, ok := strings.Cut(cred, ":")
		if !ok || user == "" || len(user) > 255 || len(pass) > 255 {
			return f, errors.New("credentials must be USER:PASS@ADDR:PORT")
		}
		f.user, f.pass, s = user, pass, addr
	}
	if _, _, err := net.SplitHostPort(s); err != nil {
		return f, fmt.Errorf("want [USER:PASS@]ADDR:PORT: %v", err)
	}
	f.addr = s
	return f, nil
}

// services are the daemon's servers for the host.
type services struct {
	socks                          socksFlag
	socksAddr                      string
	httpProxy, webListen, webToken string
	stateDir                       string
}

// startServices starts the proxies and the status page that s asks for
// and returns a function that stops them.
func startServices(d *daemon, s services) (stop func(), err error) {
	var closers []func() error
	stop = func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	defer func() {
		if err != nil {
			stop()
		}
	}()
	if s.socks.addr != "" {
		ln, err := net.Listen("tcp", s.socks.addr)
		if err != nil {
			return stop, fmt.Errorf("--socks5-server: %w", err)
		}
		srv := proxy.ServeSOCKS5(ln, proxy.SOCKS5Config{Dial: d.Dial, Username: s.socks.user, Password: s.socks.pass, Logger: d.logger.With("component", "socks5")})
		closers = append(closers, srv.Close)
		d.logger.Info("SOCKS5 proxy listening", "addr", ln.Addr().String(), "auth", s.socks.user != "")
		if s.socks.user == "" {
			warnOpen(d, ln, "SOCKS5 proxy (give it USER:PASS@)")
		}
	}
	if s.httpProxy != "" {
		ln, err := net.Listen("tcp", s.httpProxy)
		if err != nil {
			return stop, fmt.Errorf("--outbound-http-proxy-listen: %w", err)
		}
		srv := proxy.ServeHTTP(ln, proxy.HTTPConfig{Dial: d.Dial, Logger: d.logger.With("component", "http-proxy")})
		closers = append(closers, srv.Close)
		d.logger.Info("HTTP proxy listening", "addr", ln.Addr().String())
		warnOpen(d, ln, "HTTP proxy")
	}
	if s.webListen != "" {
		token, err := webToken(s.webToken, s.stateDir)
		if err != nil {
			return stop, err
		}
		ln, err := web.Listen(s.webListen, token)
		if err != nil {
			return stop, fmt.Errorf("--web-listen: %w", err)
		}
		srv := web.Serve(ln, web.Options{Node: d.node, Token: token})
		closers = append(closers, srv.Close)
		d.logger.Info("status page listening", "url", "http://"+ln.Addr().String()+"/", "token", token != "")
	}
	return stop, nil
}

// warnOpen warns when a proxy without authentication listens beyond
// loopback: whoever reaches it reaches the tailnet as this node.
func warnOpen(d *daemon, ln net.Listener, what string) {
	if a, ok := ln.Addr().(*net.TCPAddr); ok && !a.IP.IsLoopback() {
		d.logger.Warn("the "+what+" listens beyond loopback without authentication: anyone who reaches it uses the tailnet as this node", "addr", a.String())
	}
}

// webTokenFile is the status page's token file in the state directory.
const webTokenFile = "web-token"

// webToken returns the --web-token flag, or the token file's first line.
func webToken(flagValue, stateDir string) (string, error) {
	if flagValue != "" || stateDir == "" {
		return flagValue, nil
	}
	b, err := os.ReadFile(filepath.Join(stateDir, webTokenFile))
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("web token: %w", err)
	}
	tok, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimSpace(tok), nil
}
