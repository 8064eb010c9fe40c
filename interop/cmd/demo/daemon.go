package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/microlink-go/microlink/interop/lab"
)

// daemon is a running "microlink up".
type daemon struct {
	cmd  *exec.Cmd
	dir  string // its --statedir, where its local API socket is
	logs *logRing
	done chan struct{} // closed when it has exited
	err  error         // of its exit, once done is closed
}

func (d *demo) buildCLI(ctx context.Context) error {
	var dir string
	if err := d.r.Do(func() { dir = d.r.TempDir() }); err != nil {
		return err
	}
	t0 := time.Now()
	bin, err := buildMicrolink(ctx, dir)
	if err != nil {
		return err
	}
	fi, err := os.Stat(bin)
	if err != nil {
		return err
	}
	d.cli = bin
	d.linef("$ CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' ./cmd/microlink")
	d.linef("built      in %v: %s", since(t0), bin)
	d.linef("size       %.2f MiB for %s/%s, stripped, as for a router", float64(fi.Size())/(1<<20), runtime.GOOS, runtime.GOARCH)
	// Its flags say which features the daemon's steps can show.
	out, err := exec.CommandContext(ctx, bin, "up", "--help").CombinedOutput()
	if err != nil {
		return fmt.Errorf("microlink up --help: %v: %s", err, out)
	}
	d.upFlags = upFlags(string(out))
	if len(d.upFlags) == 0 {
		return fmt.Errorf("microlink up --help lists no flags:\n%s", out)
	}
	return nil
}

// upFlags returns the flags that the help of "microlink up" lists, in the
// form the flag package prints: "  -name type" on a line of its own.
func upFlags(help string) map[string]bool {
	flags := map[string]bool{}
	for _, line := range strings.Split(help, "\n") {
		if f, ok := strings.CutPrefix(line, "  -"); ok {
			name, _, _ := strings.Cut(f, " ")
			flags[name] = true
		}
	}
	return flags
}

func (d *demo) startDaemon(ctx context.Context) error {
	var dir string
	if err := d.r.Do(func() { dir = d.r.TempDir() }); err != nil {
		return err
	}
	args := []string{"up", "--authkey", d.lab.AuthKey, "--hostname", daemonName, "--login-server", d.lab.ControlURL, "--statedir", dir}
	args = append(args, d.featureArgs()...)
	if d.planned["accept-dns"] {
		// The router's own, for --accept-dns to rewrite: never this
		// machine's.
		var err error
		if rerr := d.r.Do(func() { err = d.router.giveResolvConf(d.r, routerResolvConf) }); rerr != nil || err != nil {
			return errors.Join(rerr, err)
		}
	}
	d.linef("$ microlink %s", strings.Join(args, " "))
	if d.router != nil {
		d.linef("where      in %s, a network of its own (%v on eth0), as on a router", d.router.Name, d.router.Far)
	} else {
		d.linef("where      this host's network, with the rest (no namespace of its own without root)")
	}

	var cmd *exec.Cmd
	if d.router != nil {
		cmd = d.router.Command(context.Background(), d.cli, args...)
	} else {
		cmd = exec.Command(d.cli, args...)
	}
	dm := &daemon{cmd: cmd, dir: dir, logs: newLogRing(200), done: make(chan struct{})}
	var w io.Writer = &lineWriter{emit: func(line string) { dm.logs.Logf("%s", line) }}
	if d.opts.Verbose {
		w = io.MultiWriter(w, &lineWriter{emit: func(line string) { fmt.Fprintf(d.opts.Log, "microlink up: %s\n", line) }})
	}
	cmd.Stdout, cmd.Stderr = w, w
	// Killed if the demo dies first: the signal is tied to the thread
	// that starts it, and Go ends no thread of an unlocked goroutine.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting microlink up: %w", err)
	}
	d.daemon = dm
	go func() {
		dm.err = cmd.Wait()
		close(dm.done)
	}()

	// Joined when the real peer's netmap lists it.
	t0 := time.Now()
	wctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	for {
		st, err := d.peer.Status(wctx)
		if err == nil {
			if p := lab.FindPeer(st, daemonName); p != nil {
				d.linef("joined     in %v: %s (as the real peer sees it)", since(t0), joinAddrs(p.TailscaleIPs...))
				for _, a := range p.TailscaleIPs {
					if a.Is4() {
						d.daemonIP = a
					}
				}
				break
			}
		}
		select {
		case <-dm.done:
			d.showLog()
			return fmt.Errorf("microlink up exited: %v", dm.err)
		case <-wctx.Done():
			d.showLog()
			return fmt.Errorf("the real peer does not list %s after %v", daemonName, since(t0))
		case <-time.After(100 * time.Millisecond):
		}
	}
	d.showLog()
	return nil
}

// showLog prints the daemon's log so far, without the time of each line.
func (d *demo) showLog() {
	d.linef("its log (times left out):")
	lines := strings.Split(strings.TrimRight(d.daemon.logs.String(), "\n"), "\n")
	for i, line := range lines {
		if strings.HasPrefix(line, "time=") {
			if _, rest, ok := strings.Cut(line, " "); ok {
				lines[i] = rest
			}
		}
	}
	d.block(strings.Join(lines, "\n"))
}

// daemonCLI runs "microlink CMD --statedir DIR ARGS" against the daemon
// and returns the command line, as a person would type it, and the
// combined output.
func (d *demo) daemonCLI(ctx context.Context, cmd string, args ...string) (line, out string, err error) {
	args = append([]string{cmd, "--statedir", d.daemon.dir}, args...)
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	b, err := exec.CommandContext(cctx, d.cli, args...).CombinedOutput()
	return "$ microlink " + strings.Join(args, " "), string(b), err
}

func (d *demo) daemonStatus(ctx context.Context) error {
	// Its peers show up with the netmap that follows its registration.
	wctx, cancel := context.WithTimeout(ctx, waitTimeout)
	defer cancel()
	var (
		line, out string
		err       error
	)
	for {
		line, out, err = d.daemonCLI(ctx, "status")
		if err == nil && strings.Contains(out, peerName) && strings.Contains(out, nodeName) {
			break
		}
		if wctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	d.linef("%s", line)
	d.block(out)
	if err != nil {
		return fmt.Errorf("microlink status: %v", err)
	}
	if !strings.Contains(out, peerName) || !strings.Contains(out, nodeName) {
		return fmt.Errorf("microlink status does not list both %s and %s after %v", peerName, nodeName, waitTimeout)
	}
	return nil
}

func (d *demo) daemonPings(ctx context.Context) error {
	var errs []error
	for _, target := range []string{peerName, nodeName} {
		line, out, err := d.daemonCLI(ctx, "ping", "-c", "3", "--timeout", "3s", target)
		d.linef("%s", line)
		d.block(out)
		if err != nil || !strings.Contains(out, "pong from "+target) {
			errs = append(errs, fmt.Errorf("microlink ping %s: %v: %s", target, err, strings.TrimSpace(lastLine(out))))
		}
	}
	// And the other way: the real peer pings the daemon.
	st, err := d.peer.Status(ctx)
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("status of the real peer: %w", err))...)
	}
	p := lab.FindPeer(st, daemonName)
	if p == nil || len(p.TailscaleIPs) == 0 {
		return errors.Join(append(errs, fmt.Errorf("the real peer does not list %s", daemonName))...)
	}
	if err := d.tailscalePing(ctx, p.TailscaleIPs[0].String()); err != nil {
		errs = append(errs, fmt.Errorf("tailscale ping %s: %w", daemonName, err))
	}
	return errors.Join(errs...)
}

// stopDaemon stops "microlink up" as a service manager does, with SIGTERM,
// and checks that it exits cleanly and in time.
func (d *demo) stopDaemon() error {
	dm := d.daemon
	t0 := time.Now()
	dm.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-dm.done:
	case <-time.After(stopTimeout):
		dm.kill()
		return fmt.Errorf("microlink up did not exit within %v of SIGTERM; killed", stopTimeout)
	}
	if dm.err != nil {
		d.showLog()
		return fmt.Errorf("microlink up after SIGTERM: %v", dm.err)
	}
	d.linef("microlink up exited in %v after SIGTERM, status 0", since(t0))
	return nil
}

// kill ends the daemon, if it runs, and waits for it. It may be called on
// a nil daemon.
func (dm *daemon) kill() {
	if dm == nil {
		return
	}
	select {
	case <-dm.done:
	default:
		dm.cmd.Process.Kill()
		<-dm.done
	}
}

// lineWriter calls emit for each complete line written to it.
type lineWriter struct {
	mu   sync.Mutex
	buf  []byte
	emit func(string)
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.emit(string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
	return len(p), nil
}
