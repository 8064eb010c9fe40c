package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"tailscale.com/client/local"
	"tailscale.com/ipn/ipnstate"
	"tailscale.com/tailcfg"
)

// StartTimeout bounds how long StartTailscaled waits for the daemon to
// come up and reach the Running state.
const StartTimeout = 30 * time.Second

// TSOptions configure a tailscaled started by StartTailscaled.
type TSOptions struct {
	// Hostname is passed to "tailscale up --hostname". Required.
	Hostname string

	// TUN runs tailscaled with a real TUN device so that OS commands and
	// sockets of the test process reach tailnet addresses. It requires
	// TUNAvailable() == nil, and at most one TUN tailscaled runs at a
	// time (two would fight over routes). Otherwise tailscaled uses
	// userspace networking.
	TUN bool

	// NeverDirect sets TS_DEBUG_NEVER_DIRECT_UDP=1: traffic to peers
	// always goes through DERP.
	NeverDirect bool

	// Env holds extra environment variables ("K=V") for tailscaled;
	// they take precedence over the lab's.
	Env []string

	// UpArgs holds extra arguments for "tailscale up".
	UpArgs []string

	// ControlURL, if set, is the control server "tailscale up" logs in
	// to instead of the lab's, such as a Headscale server, and AuthKey
	// is the auth key it requires. The lab's DERP and STUN servers are
	// then used only if that server's DERP map names them.
	ControlURL string
	AuthKey    string

	// CompleteAuth, if set, makes "tailscale up" log in interactively,
	// without an auth key: it is called with the login URL tailscaled
	// shows and must complete the login (for the lab's control server,
	// Lab.Control.CompleteAuth when ConfigureControl set RequireAuth), and
	// report whether it did.
	CompleteAuth func(authURL string) bool

	// Netns, if set, names a network namespace (made with "ip netns add")
	// in which tailscaled and its tailscale command run, through
	// "ip netns exec". Its socket and files stay on the shared file
	// system, so LocalClient works from the test's own namespace. The
	// lab must listen on an address the namespace reaches (see
	// Options.ListenAddr). A TUN tailscaled in a namespace of its own does
	// not count against the one-TUN limit; one per namespace may run.
	Netns string
}

// Tailscaled is a running tailscaled process joined to a lab.
type Tailscaled struct {
	// Hostname is the hostname it registered with.
	Hostname string
	// Dir holds its state, socket and log file.
	Dir string
	// Socket is the path of its LocalAPI socket.
	Socket string
	// LogFile is the path of its combined stdout and stderr.
	LogFile string
	// TUNName is its TUN device, or "userspace-networking".
	TUNName string
	// LocalClient talks to its LocalAPI.
	LocalClient *local.Client

	cli      string
	bin      string    // tailscaled, for Restart
	lab      *Lab      // for Restart
	opts     TSOptions // for Restart
	netns    string
	cmd      *exec.Cmd
	exited   chan struct{} // closed when the process has exited
	exitErr  error         // valid once exited is closed
	deathW   *os.File      // closing it makes tailscaled exit (TS_PARENT_DEATH_FD)
	stopOnce sync.Once
	tun      bool
	ip4, ip6 netip.Addr

	// loopbackControl, if set, is a 127.0.0.1 address forwarding to
	// the lab's control server, for "tailscale up".
	loopbackControl string
}

var (
	tunInUse   atomic.Bool
	tunCounter atomic.Int32
)

// StartTailscaled starts a tailscaled, runs "tailscale up" against the
// lab's control server and waits until it is Running with an IPv4
// address. The daemon is stopped by t.Cleanup; if the test failed, the
// last lines of its log are printed.
func (l *Lab) StartTailscaled(t T, opts TSOptions) *Tailscaled {
	t.Helper()
	if opts.Hostname == "" {
		t.Fatalf("lab: TSOptions.Hostname is required")
	}
	tailscaled, tailscale, err := Binaries()
	if err != nil {
		t.Fatalf("%v", err)
	}
	sharedTUN := opts.TUN && opts.Netns == ""
	if opts.TUN {
		if err := TUNAvailable(); err != nil {
			t.Fatalf("%v", err)
		}
	}
	if sharedTUN {
		if !tunInUse.CompareAndSwap(false, true) {
			t.Fatalf("lab: only one TUN tailscaled may run at a time; use userspace networking or tsnet for other peers")
		}
	}
	// Unix socket paths are limited to 108 bytes: keep the directory short
	// rather than under t.TempDir.
	dir, err := os.MkdirTemp("", "mlts-")
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	d := &Tailscaled{
		Hostname: opts.Hostname,
		Dir:      dir,
		Socket:   filepath.Join(dir, "tailscaled.sock"),
		LogFile:  filepath.Join(dir, "tailscaled.log"),
		TUNName:  "userspace-networking",
		cli:      tailscale,
		bin:      tailscaled,
		lab:      l,
		opts:     opts,
		netns:    opts.Netns,
		exited:   make(chan struct{}),
		tun:      sharedTUN,
	}
	if opts.TUN {
		d.TUNName = fmt.Sprintf("mltun%d", tunCounter.Add(1))
	}
	d.LocalClient = &local.Client{Socket: d.Socket, UseSocketOnly: true}
	// After a reconnect, tailscaled dials an http:// control URL whose
	// host is neither loopback nor private with HTTPS on port 443 instead,
	// and loses control (see control/ts2021 in tailscale.com). When the
	// lab listens elsewhere, one in this namespace gets a loopback URL.
	if opts.ControlURL == "" && opts.Netns == "" && !l.listen.IsLoopback() {
		u, err := url.Parse(l.ControlURL)
		if err != nil {
			t.Fatalf("lab: control URL: %v", err)
		}
		d.loopbackControl = ForwardTCP(t, u.Host)
	}
	t.Cleanup(func() {
		d.Stop()
		if t.Failed() {
			d.printLogTail(t, 100)
		}
		os.RemoveAll(dir)
	})

	if err := d.start(tailscaled, l, opts); err != nil {
		if sharedTUN {
			tunInUse.Store(false)
		}
		t.Fatalf("lab: starting tailscaled %s: %v", opts.Hostname, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
	defer cancel()
	if err := d.up(ctx, l, opts); err != nil {
		t.Fatalf("lab: tailscaled %s: %v", opts.Hostname, err)
	}
	return d
}

func (d *Tailscaled) start(bin string, l *Lab, opts TSOptions) error {
	logFile, err := os.OpenFile(d.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close() // the child holds its own copy
	deathR, deathW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer deathR.Close()
	d.deathW = deathW

	cmd := d.command(context.Background(), bin,
		"--statedir="+filepath.Join(d.Dir, "state"),
		"--socket="+d.Socket,
		"--port=0",
		"--tun="+d.TUNName,
		"--no-logs-no-support",
	)
	cmd.Env = append(os.Environ(),
		"TS_LOGS_DIR="+d.Dir,
		"TS_DISABLE_PORTMAPPER=1",
		"TS_PANIC_IF_HIT_MAIN_CONTROL=1",
		"TS_NETCHECK_GENERATE_204_URL="+l.ControlURL+"/generate_204",
		"TS_ASSUME_NETWORK_UP_FOR_TEST=1",
		"TS_DEBUG_PERMIT_HTTP_C2N=1",
		"HTTP_PROXY="+l.trap.URL,
		"HTTPS_PROXY="+l.trap.URL,
		"TS_PARENT_DEATH_FD=3",
		// The lab's servers are reached directly, never through the trap.
		"NO_PROXY="+l.listen.String(),
		"no_proxy="+l.listen.String(),
	)
	if opts.NeverDirect {
		cmd.Env = append(cmd.Env, "TS_DEBUG_NEVER_DIRECT_UDP=1")
	}
	cmd.Env = append(cmd.Env, opts.Env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// tailscaled exits when the write end of this pipe closes, which
	// happens at the latest when the test process dies.
	cmd.ExtraFiles = []*os.File{deathR}
	if err := cmd.Start(); err != nil {
		deathW.Close()
		return err
	}
	d.cmd = cmd
	go func() {
		d.exitErr = cmd.Wait()
		close(d.exited)
		if d.tun {
			tunInUse.Store(false)
		}
	}()
	return nil
}

func (d *Tailscaled) up(ctx context.Context, l *Lab, opts TSOptions) error {
	// Wait for the LocalAPI.
	if _, err := d.WaitStatus(ctx, func(*ipnstate.Status) bool { return true }); err != nil {
		return fmt.Errorf("LocalAPI not ready: %w", err)
	}
	controlURL, authKey := l.ControlURL, l.AuthKey
	if opts.ControlURL != "" {
		controlURL, authKey = opts.ControlURL, opts.AuthKey
	} else if d.loopbackControl != "" {
		controlURL = "http://" + d.loopbackControl
	}
	args := []string{"up",
		"--login-server=" + controlURL,
		"--hostname=" + opts.Hostname,
	}
	if opts.CompleteAuth == nil {
		args = append(args, "--authkey="+authKey)
	}
	if opts.TUN {
		args = append(args, "--netfilter-mode=off")
		// Its namespace shares the host's /etc/resolv.conf, which it
		// must not rewrite, unless UpArgs say otherwise (tailscale up
		// refuses a flag given twice).
		if !slices.ContainsFunc(opts.UpArgs, func(a string) bool { return strings.HasPrefix(a, "--accept-dns") }) {
			args = append(args, "--accept-dns=false")
		}
	}
	args = append(args, opts.UpArgs...)
	if opts.CompleteAuth != nil {
		if err := d.upInteractive(ctx, args, opts.CompleteAuth); err != nil {
			return err
		}
	} else if out, err := d.CLI(ctx, args...); err != nil {
		return fmt.Errorf("tailscale up: %w\n%s", err, out)
	}
	st, err := d.WaitStatus(ctx, func(st *ipnstate.Status) bool {
		return st.BackendState == "Running" && len(st.TailscaleIPs) > 0
	})
	if err != nil {
		return fmt.Errorf("waiting for Running: %w", err)
	}
	for _, ip := range st.TailscaleIPs {
		if ip.Is4() && !d.ip4.IsValid() {
			d.ip4 = ip
		}
		if ip.Is6() && !d.ip6.IsValid() {
			d.ip6 = ip
		}
	}
	if !d.ip4.IsValid() {
		return fmt.Errorf("no IPv4 address in %v", st.TailscaleIPs)
	}
	return nil
}

// upInteractive runs "tailscale up" without an auth key, which waits for
// the login: it hands the login URL from the daemon's status to complete,
// then waits for the command to finish.
func (d *Tailscaled) upInteractive(ctx context.Context, args []string, complete func(string) bool) error {
	type result struct {
		out []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := d.CLI(ctx, args...)
		done <- result{out, err}
	}()
	st, err := d.WaitStatus(ctx, func(st *ipnstate.Status) bool { return st.AuthURL != "" })
	if err != nil {
		return fmt.Errorf("waiting for the login URL: %w", err)
	}
	if !complete(st.AuthURL) {
		return fmt.Errorf("could not complete the login at %s", st.AuthURL)
	}
	r := <-done
	if r.err != nil {
		return fmt.Errorf("tailscale up: %w\n%s", r.err, r.out)
	}
	return nil
}

// CLI runs the tailscale command against this daemon's socket and returns
// its combined output.
func (d *Tailscaled) CLI(ctx context.Context, args ...string) ([]byte, error) {
	cmd := d.command(ctx, d.cli, append([]string{"--socket=" + d.Socket}, args...)...)
	return cmd.CombinedOutput()
}

// command returns a command for bin that runs in the daemon's namespace.
func (d *Tailscaled) command(ctx context.Context, bin string, args ...string) *exec.Cmd {
	if d.netns == "" {
		return exec.CommandContext(ctx, bin, args...)
	}
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", d.netns, bin}, args...)...)
}

// Netns returns the network namespace the daemon runs in, or "" for the
// test's own.
func (d *Tailscaled) Netns() string { return d.netns }

// Status returns the daemon's status, peers included.
func (d *Tailscaled) Status(ctx context.Context) (*ipnstate.Status, error) {
	return d.LocalClient.Status(ctx)
}

// WaitStatus polls Status until cond returns true, the daemon exits or
// ctx is done, and returns the last status.
func (d *Tailscaled) WaitStatus(ctx context.Context, cond func(*ipnstate.Status) bool) (*ipnstate.Status, error) {
	var lastErr error
	for {
		st, err := d.Status(ctx)
		if err == nil && cond(st) {
			return st, nil
		}
		if err != nil {
			lastErr = err
		}
		select {
		case <-d.exited:
			return st, fmt.Errorf("tailscaled exited: %v", d.exitErr)
		case <-ctx.Done():
			if lastErr != nil {
				return st, fmt.Errorf("%w (last error: %v)", ctx.Err(), lastErr)
			}
			return st, ctx.Err()
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// WaitPeer waits until a peer with the given hostname appears in the
// daemon's status and returns it.
func (d *Tailscaled) WaitPeer(ctx context.Context, hostname string) (*ipnstate.PeerStatus, error) {
	var found *ipnstate.PeerStatus
	_, err := d.WaitStatus(ctx, func(st *ipnstate.Status) bool {
		found = FindPeer(st, hostname)
		return found != nil
	})
	if err != nil {
		return nil, fmt.Errorf("peer %q: %w", hostname, err)
	}
	return found, nil
}

// FindPeer returns the peer in st with the given hostname, or nil.
func FindPeer(st *ipnstate.Status, hostname string) *ipnstate.PeerStatus {
	if st == nil {
		return nil
	}
	for _, p := range st.Peer {
		if p.HostName == hostname {
			return p
		}
	}
	return nil
}

// Ping sends one ping of the given type ("disco", "TSMP" or "ICMP") to ip
// through the LocalAPI and waits for the reply. Unlike "tailscale ping" it
// neither waits for a direct path nor sleeps between attempts. A reply
// carrying an error is returned together with that error.
func (d *Tailscaled) Ping(ctx context.Context, ip netip.Addr, typ string) (*ipnstate.PingResult, error) {
	res, err := d.LocalClient.Ping(ctx, ip, tailcfg.PingType(typ))
	if err != nil {
		return nil, err
	}
	if res.Err != "" {
		return res, errors.New(res.Err)
	}
	return res, nil
}

// PingRetry is Ping with up to tries attempts of 3 s each, 200 ms apart,
// for the first pings of a path, which may race the WireGuard handshake
// or the DERP route. It returns the first reply, or the last error.
func (d *Tailscaled) PingRetry(ctx context.Context, ip netip.Addr, typ string, tries int) (*ipnstate.PingResult, error) {
	return retry(ctx, tries, 200*time.Millisecond, func(ctx context.Context) (*ipnstate.PingResult, error) {
		return d.Ping(ctx, ip, typ)
	})
}

// IPv4 returns the daemon's tailnet IPv4 address (100.64.0.N).
func (d *Tailscaled) IPv4() netip.Addr { return d.ip4 }

// IPv6 returns the daemon's tailnet IPv6 address, if it has one.
func (d *Tailscaled) IPv6() netip.Addr { return d.ip6 }

// Stop terminates the daemon and waits for it to exit. It may be called
// more than once.
func (d *Tailscaled) Stop() {
	d.stopOnce.Do(func() {
		if d.cmd == nil {
			return
		}
		d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.exited:
		case <-time.After(5 * time.Second):
			d.cmd.Process.Kill()
			<-d.exited
		}
		d.deathW.Close()
	})
}

// Restart stops the daemon as Stop does and starts it again with the same
// state directory, socket and options, as a reboot or an upgrade would,
// and waits until it is Running again. It keeps its node key and tailnet
// addresses; its disco key is new, and so is its UDP port (the lab runs
// tailscaled with --port=0). Its log goes on in the same file. tailscaled
// logs in again at every start, without the auth key "tailscale up" gave
// it: the lab's control server must not require one (see
// Options.ConfigureControl).
func (d *Tailscaled) Restart(t T) {
	t.Helper()
	d.Stop()
	if d.tun && !tunInUse.CompareAndSwap(false, true) {
		t.Fatalf("lab: restarting tailscaled %s: another TUN tailscaled runs", d.Hostname)
	}
	d.exited = make(chan struct{})
	d.exitErr = nil
	d.stopOnce = sync.Once{}
	if err := d.start(d.bin, d.lab, d.opts); err != nil {
		if d.tun {
			tunInUse.Store(false)
		}
		t.Fatalf("lab: restarting tailscaled %s: %v", d.Hostname, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
	defer cancel()
	if _, err := d.WaitStatus(ctx, func(st *ipnstate.Status) bool {
		return st.BackendState == "Running" && len(st.TailscaleIPs) > 0
	}); err != nil {
		t.Fatalf("lab: tailscaled %s after a restart: %v", d.Hostname, err)
	}
}

// Log returns the daemon's log so far.
func (d *Tailscaled) Log() string {
	b, _ := os.ReadFile(d.LogFile)
	return string(b)
}

func (d *Tailscaled) printLogTail(t T, n int) {
	b, err := os.ReadFile(d.LogFile)
	if err != nil {
		t.Logf("lab: tailscaled %s log: %v", d.Hostname, err)
		return
	}
	lines := strings.Split(string(bytes.TrimRight(b, "\n")), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	t.Logf("lab: last %d lines of tailscaled %s log:\n%s", len(lines), d.Hostname, strings.Join(lines, "\n"))
}
