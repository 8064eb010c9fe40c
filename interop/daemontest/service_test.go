package daemontest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/microlink-go/microlink/interop/lab"
)

const distDir = "../../dist"

// unitCommand returns the systemd unit's ExecStart, with the variables of
// env substituted as systemd does ($VAR splits into words).
func unitCommand(t *testing.T, env map[string]string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(distDir, "systemd", "microlink.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		cmd, ok := strings.CutPrefix(line, "ExecStart=")
		if !ok {
			continue
		}
		var argv []string
		for _, w := range strings.Fields(cmd) {
			if v, ok := strings.CutPrefix(w, "$"); ok {
				argv = append(argv, strings.Fields(env[v])...)
			} else {
				argv = append(argv, w)
			}
		}
		return argv
	}
	t.Fatal("no ExecStart")
	return nil
}

// openwrtCommand runs the procd script's start_service with stand-ins for
// UCI and procd and returns the command and environment it sets up.
func openwrtCommand(t *testing.T, uci map[string]string) (argv, env []string) {
	t.Helper()
	body, err := os.ReadFile(filepath.Join(distDir, "openwrt", "microlink.init"))
	if err != nil {
		t.Fatal(err)
	}
	stubs := `
config_load() { :; }
config_get() { eval "v=\${UCI_$3-}"; [ -n "$v" ] || v="$4"; eval "$1=\$v"; }
config_get_bool() { config_get "$@"; }
procd_open_instance() { :; }
procd_set_param() { k=$1; shift; case $k in command) CMD="$*";; env) echo "env $*";; esac; }
procd_append_param() { shift; CMD="$CMD $*"; }
procd_close_instance() { echo "command $CMD"; }
`
	cmd := exec.Command("sh", "-c", stubs+string(body)+"\nstart_service\n")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range uci {
		cmd.Env = append(cmd.Env, "UCI_"+k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("start_service: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if c, ok := strings.CutPrefix(line, "command "); ok {
			argv = strings.Fields(c)
		}
		if e, ok := strings.CutPrefix(line, "env "); ok {
			env = append(env, strings.Fields(e)...)
		}
	}
	if len(argv) == 0 {
		t.Fatalf("no command:\n%s", out)
	}
	return argv, env
}

// runService runs a service manager's command line (argv[0] replaced by
// the built binary) with only env, checks that it joins and logs to
// stderr, then stops it with SIGTERM, which must end it, cleanly, within
// 2 s.
func runService(t *testing.T, argv, env []string, stateDir string) {
	t.Helper()
	cmd := exec.Command(microlinkCLI(t), argv[1:]...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	d := runDaemon(t, cmd, stateDir)
	d.waitState(t, "Running", 30*time.Second)
	if !strings.Contains(d.logs.String(), `level=INFO msg=up `) {
		t.Errorf("no log line on stderr:\n%s", d.logs.String())
	}
	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		t.Fatal("still running 10 s after SIGTERM")
	}
	took := time.Since(start)
	if !cmd.ProcessState.Success() || took > 2*time.Second {
		t.Fatalf("after SIGTERM: %v in %v (want exit 0 within 2 s)", cmd.ProcessState, took)
	}
	t.Logf("stopped %v after SIGTERM", took.Round(time.Millisecond))
	if _, err := os.Stat(filepath.Join(stateDir, "microlink.state")); err != nil {
		t.Errorf("identity not kept: %v", err)
	}
}

// TestSystemdUnit runs the unit's command line, with the variables its
// EnvironmentFile would set, against the lab.
func TestSystemdUnit(t *testing.T) {
	l := lab.Start(t, lab.Options{})
	dir, err := os.MkdirTemp("", "mlunit-")
	if err != nil {
		t.Fatal(err)
	}
	argv := unitCommand(t, map[string]string{"MICROLINK_FLAGS": "--hostname=ml-unit --web-listen=127.0.0.1:0"})
	if argv[0] != "/usr/bin/microlink" {
		t.Fatalf("ExecStart %q", argv)
	}
	for i, a := range argv {
		argv[i] = strings.ReplaceAll(a, "/var/lib/microlink", dir) // StateDirectory=microlink
	}
	runService(t, argv, []string{"TS_AUTHKEY=" + l.AuthKey, "TS_CONTROL_URL=" + l.ControlURL}, dir)
}

// TestOpenWrtService runs the command line the procd script builds from
// its UCI options against the lab.
func TestOpenWrtService(t *testing.T) {
	l := lab.Start(t, lab.Options{})
	dir, err := os.MkdirTemp("", "mlowrt-")
	if err != nil {
		t.Fatal(err)
	}
	argv, env := openwrtCommand(t, map[string]string{"authkey": l.AuthKey, "login_server": l.ControlURL,
		"hostname": "ml-openwrt", "statedir": dir, "port": "0", "socks5_server": "127.0.0.1:0"})
	if argv[0] != "/usr/bin/microlink" || strings.Contains(strings.Join(argv, " "), l.AuthKey) {
		t.Fatalf("command %q", argv)
	}
	runService(t, argv, env, dir)
}
