package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/microlink-go/microlink/interop/lab"
)

// The steps that show the daemon's features, and what they need.

// needRouter is met if the daemon gets a network namespace of its own, in
// which it may make a TUN device.
func needRouter() string {
	switch {
	case os.Geteuid() != 0:
		return "the daemon's TUN device needs root"
	case !lab.InNetns():
		return "the daemon's TUN device needs a network namespace of its own, and there is no ip command (install iproute2)"
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return "no /dev/net/tun for the daemon's TUN device"
	}
	return ""
}

// featureArgs returns the flags of "microlink up" for the features whose
// steps run, and sets where the proxies listen.
func (d *demo) featureArgs() []string {
	var args []string
	if d.planned["tun"] {
		args = append(args, "--tun")
	}
	if d.planned["accept-dns"] {
		args = append(args, "--accept-dns")
	}
	if d.planned["socks5-server"] {
		// On the router, the ports a person would pick; in this host's
		// network, free ones.
		d.socksAddr, d.httpProxy = "127.0.0.1:1080", "127.0.0.1:8080"
		if d.router == nil {
			d.socksAddr, d.httpProxy = freeLoopbackPort(), freeLoopbackPort()
		}
		args = append(args, "--socks5-server="+d.socksAddr)
		if d.upFlags["outbound-http-proxy-listen"] {
			args = append(args, "--outbound-http-proxy-listen="+d.httpProxy)
		} else {
			d.httpProxy = ""
		}
	}
	return args
}

// freeLoopbackPort returns 127.0.0.1 and a TCP port that was free a moment
// ago.
func freeLoopbackPort() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "127.0.0.1:0"
	}
	defer ln.Close()
	return ln.Addr().String()
}

// onDaemonsHost runs an OS command where the daemon runs, on the router
// or in this process's network, shows it, and returns its combined
// output.
func (d *demo) onDaemonsHost(ctx context.Context, name string, args ...string) (string, error) {
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	var cmd *exec.Cmd
	if d.router != nil {
		cmd = d.router.Command(cctx, name, args...)
	} else {
		cmd = exec.CommandContext(cctx, name, args...)
	}
	out, err := cmd.CombinedOutput()
	prompt := "$"
	if d.router != nil {
		prompt = "router$"
	}
	d.linef("%s %s %s", prompt, name, strings.Join(args, " "))
	d.block(string(out))
	if err != nil {
		return string(out), fmt.Errorf("%s: %v: %s", name, err, strings.TrimSpace(lastLine(string(out))))
	}
	return string(out), nil
}

// serveHTTP serves, on the far end, a page that says who asked, and
// returns its address; stop ends it.
func (d *demo) serveHTTP(ctx context.Context) (f *farEnd, port uint16, stop func(), err error) {
	f, err = d.farEnd(ctx)
	if err != nil {
		return nil, 0, nil, err
	}
	ln, err := f.listen()
	if err != nil {
		return nil, 0, nil, err
	}
	ap, err := netip.ParseAddrPort(ln.Addr().String())
	if err != nil {
		ln.Close()
		return nil, 0, nil, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s; you came from %s\n", f.name, r.RemoteAddr)
	})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	stop = func() {
		srv.Close()
		<-done
	}
	d.linef("web page  http://%v/ on %s", netip.AddrPortFrom(f.addr, ap.Port()), f.label)
	return f, ap.Port(), stop, nil
}

// fromDaemon checks that a page served by serveHTTP saw the daemon's
// tailnet address as the caller.
func (d *demo) fromDaemon(page string) error {
	if !strings.Contains(page, "you came from "+d.daemonIP.String()+":") {
		return fmt.Errorf("the page did not see the daemon's address %v as the caller: %q", d.daemonIP, strings.TrimSpace(page))
	}
	return nil
}

func (d *demo) tunPrograms(ctx context.Context) error {
	var errs []error
	if _, err := d.onDaemonsHost(ctx, "ip", "-brief", "address"); err != nil {
		errs = append(errs, err)
	}
	if _, err := d.onDaemonsHost(ctx, "ping", "-c", "3", "-i", "0.2", "-W", "3", d.peer.IPv4().String()); err != nil {
		errs = append(errs, err)
	}
	f, port, stop, err := d.serveHTTP(ctx)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	defer stop()
	url := fmt.Sprintf("http://%v/", netip.AddrPortFrom(f.addr, port))
	page, err := d.onDaemonsHost(ctx, "curl", "-sS", "--max-time", "10", url)
	if err == nil {
		err = d.fromDaemon(page)
	}
	return errors.Join(append(errs, err)...)
}

func (d *demo) proxies(ctx context.Context) error {
	f, port, stop, err := d.serveHTTP(ctx)
	if err != nil {
		return err
	}
	defer stop()
	// By name: the daemon looks it up with MagicDNS.
	url := fmt.Sprintf("http://%s:%d/", f.name, port)
	var errs []error
	page, err := d.onDaemonsHost(ctx, "curl", "-sS", "--max-time", "10", "--socks5-hostname", d.socksAddr, url)
	if err == nil {
		err = d.fromDaemon(page)
	}
	errs = append(errs, err)
	if d.httpProxy != "" {
		page, err := d.onDaemonsHost(ctx, "curl", "-sS", "--max-time", "10", "--proxy", "http://"+d.httpProxy, url)
		if err == nil {
			err = d.fromDaemon(page)
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// routerResolvConf is the router's resolv.conf before "microlink up
// --accept-dns" points it at MagicDNS.
const routerResolvConf = "# the router's own resolv.conf (the demo's /etc/netns file, not this machine's)\nnameserver 198.18.0.1\n"

// magicDNS shows a program on the router finding the real peer by name:
// the daemon's --accept-dns pointed the router's resolv.conf at
// 100.100.100.100, which the host reaches through the TUN device.
func (d *demo) magicDNS(ctx context.Context) error {
	// The daemon rewrites it once it has its netmap.
	wctx, cancel := context.WithTimeout(ctx, waitTimeout)
	defer cancel()
	for {
		b, err := os.ReadFile(d.router.ResolvConf())
		if err == nil && strings.Contains(string(b), "nameserver 100.100.100.100") {
			break
		}
		if wctx.Err() != nil {
			return fmt.Errorf("the router's resolv.conf does not name 100.100.100.100 after %v: %q", waitTimeout, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var errs []error
	if _, err := d.onDaemonsHost(ctx, "cat", "/etc/resolv.conf"); err != nil {
		errs = append(errs, err)
	}
	out, err := d.onDaemonsHost(ctx, "getent", "hosts", peerName)
	if err == nil {
		f := strings.Fields(out)
		if len(f) < 2 || (f[0] != d.peer.IPv4().String() && f[0] != d.peer.IPv6().String()) {
			err = fmt.Errorf("getent hosts %s: %q, want %v or %v", peerName, strings.TrimSpace(out), d.peer.IPv4(), d.peer.IPv6())
		}
	}
	errs = append(errs, err)
	d.linef("(microlink up puts the router's resolv.conf back when it stops)")
	return errors.Join(errs...)
}

// checkResolvConfRestored checks, after the daemon stopped, that the
// router's resolv.conf is as it was before --accept-dns.
func (d *demo) checkResolvConfRestored() error {
	b, err := os.ReadFile(d.router.ResolvConf())
	if err != nil {
		return err
	}
	if string(b) != routerResolvConf {
		return fmt.Errorf("the router's resolv.conf was not restored: %q", b)
	}
	d.linef("router's resolv.conf restored by microlink up")
	return nil
}
