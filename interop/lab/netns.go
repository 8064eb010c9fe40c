package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"syscall"
	"testing"
)

// envNetns marks a binary that RunInNetns or ReexecInNetns has already moved into a
// network namespace; its value is the namespace name.
const envNetns = "MICROLINK_LAB_NETNS"

// netnsEnv is added to the environment of the re-executed binary.
// In-process peers (tsnet) see a namespace holding only loopback, which
// they would otherwise take for "network down".
var netnsEnv = []string{
	"TS_ASSUME_NETWORK_UP_FOR_TEST=1",
	"TS_DISABLE_PORTMAPPER=1",
	"TS_PANIC_IF_HIT_MAIN_CONTROL=1",
}

// RunInNetns runs the tests of m and returns the exit code for os.Exit.
// Call it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(lab.RunInNetns(m)) }
//
// Run as root with the ip command (package iproute2) present, it creates a
// network namespace named ml-<pid> whose only interface is loopback,
// re-executes the test binary with the same arguments inside it via
// "ip netns exec", passes its output and exit code through, and deletes
// the namespace afterwards. The whole test process, with every tailscaled
// and OS command it starts, thus has a private loopback and may create a
// TUN device. Otherwise, and inside the namespace, it simply calls m.Run.
func RunInNetns(m *testing.M) int {
	if code, ran := reexecInNetns(); ran {
		return code
	}
	return m.Run()
}

// ReexecInNetns is RunInNetns for programs. Call it first thing in main:
//
//	if ran, code := lab.ReexecInNetns(); ran {
//		os.Exit(code)
//	}
//
// As root with the ip command present, it re-executes the program with
// the same arguments in a fresh network namespace, waits for it and
// returns ran == true with the exit code to pass on. Otherwise, and in
// the re-executed program, it returns ran == false and the program runs
// in place. Interrupts are forwarded to the re-executed program.
func ReexecInNetns() (ran bool, code int) {
	code, ran = reexecInNetns()
	return ran, code
}

// reexecInNetns does the work of RunInNetns and ReexecInNetns. It returns
// ran == false when the caller should run in place.
func reexecInNetns() (code int, ran bool) {
	if InNetns() || os.Geteuid() != 0 {
		return 0, false
	}
	ipCmd, err := exec.LookPath("ip")
	if err != nil {
		fmt.Fprintf(os.Stderr, "lab: running without a network namespace: the ip command is missing (install iproute2)\n")
		return 0, false
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "lab: cannot find own executable: %v\n", err)
		return 1, true
	}
	name := fmt.Sprintf("ml-%d", os.Getpid())
	if out, err := exec.Command(ipCmd, "netns", "add", name).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "lab: ip netns add %s: %v: %s\n", name, err, out)
		return 1, true
	}
	defer func() {
		if out, err := exec.Command(ipCmd, "netns", "delete", name).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "lab: ip netns delete %s: %v: %s\n", name, err, out)
		}
	}()
	if out, err := exec.Command(ipCmd, "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "lab: bringing up lo in %s: %v: %s\n", name, err, out)
		return 1, true
	}

	args := append([]string{"netns", "exec", name, self}, os.Args[1:]...)
	cmd := exec.Command(ipCmd, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), envNetns+"="+name)
	cmd.Env = append(cmd.Env, netnsEnv...)
	// "ip netns exec" execs the binary in place, so the child keeps
	// this setting: it dies with us. The signal is tied to the thread that
	// starts the child, which therefore must not exit before the child.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	// Forward interrupts so the child can clean up; we wait for it.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "lab: starting %s in %s: %v\n", self, name, err)
		return 1, true
	}
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	for {
		select {
		case s := <-sigs:
			cmd.Process.Signal(s)
		case err := <-waitErr:
			var ee *exec.ExitError
			switch {
			case err == nil:
				return 0, true
			case errors.As(err, &ee):
				if code := ee.ExitCode(); code > 0 {
					return code, true
				}
				return 1, true // killed by a signal
			default:
				fmt.Fprintf(os.Stderr, "lab: %s in %s: %v\n", self, name, err)
				return 1, true
			}
		}
	}
}

// InNetns reports whether this process was moved into a private network
// namespace by RunInNetns or ReexecInNetns.
func InNetns() bool { return os.Getenv(envNetns) != "" }

// TUNAvailable reports why tailscaled cannot run in TUN mode here, or nil
// if it can. TUN mode needs root, the private namespace of RunInNetns or
// ReexecInNetns (so that routes and devices never touch the host) and
// /dev/net/tun.
func TUNAvailable() error {
	if os.Geteuid() != 0 {
		return errors.New("lab: TUN mode needs root")
	}
	if !InNetns() {
		return errors.New("lab: TUN mode needs the private network namespace: call lab.RunInNetns from TestMain or lab.ReexecInNetns from main (and install iproute2 for the ip command)")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return fmt.Errorf("lab: TUN mode needs /dev/net/tun: %w", err)
	}
	return nil
}

// Command returns an exec.Cmd for an OS command such as ping. Since
// RunInNetns moves the whole process into the namespace, the command
// runs there too, and its traffic to 100.x addresses goes through the TUN
// tailscaled, if one runs.
func Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, name, args...)
}
