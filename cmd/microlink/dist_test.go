package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const distDir = "../../dist"

// checkUpFlags runs "up" with args and --help: it succeeds only if every
// flag before --help is one "up" knows, with a valid value.
func checkUpFlags(t *testing.T, args []string) {
	t.Helper()
	code, _, stderr := runCLI(append(append([]string{"up"}, args...), "--help")...)
	if code != 0 {
		t.Fatalf("up %q: code %d\n%s", args, code, stderr)
	}
}

// unitExecStart returns the unit's ExecStart command line with the
// environment variables of env substituted as systemd does ($VAR splits
// into words).
func unitExecStart(t *testing.T, unit string, env map[string]string) []string {
	t.Helper()
	for _, line := range strings.Split(unit, "\n") {
		cmd, ok := strings.CutPrefix(line, "ExecStart=")
		if !ok {
			continue
		}
		var argv []string
		for _, w := range strings.Fields(cmd) {
			if v, ok := strings.CutPrefix(w, "$"); ok {
				argv = append(argv, strings.Fields(env[v])...)
				continue
			}
			argv = append(argv, w)
		}
		return argv
	}
	t.Fatal("no ExecStart in the unit")
	return nil
}

// TestSystemdUnit checks the unit's hardening and that its command line
// is one the CLI accepts.
func TestSystemdUnit(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(distDir, "systemd", "microlink.service"))
	if err != nil {
		t.Fatal(err)
	}
	unit := string(b)
	for _, want := range []string{"StateDirectory=microlink", "StateDirectoryMode=0700", "NoNewPrivileges=yes",
		"ProtectSystem=strict", "ProtectHome=yes", "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW",
		"EnvironmentFile=-/etc/default/microlink", "KillSignal=SIGTERM", "Restart=on-failure", "ExecReload=/bin/kill -HUP $MAINPID"} {
		if !strings.Contains(unit, "\n"+want+"\n") {
			t.Errorf("unit lacks %q", want)
		}
	}
	argv := unitExecStart(t, unit, map[string]string{"MICROLINK_FLAGS": "--socks5-server=localhost:1080 --web-listen=127.0.0.1:8088"})
	if argv[0] != "/usr/bin/microlink" || argv[1] != "up" || !strings.Contains(strings.Join(argv, " "), "--statedir=/var/lib/microlink") {
		t.Fatalf("ExecStart %q", argv)
	}
	checkUpFlags(t, argv[2:])
}

// TestOpenWrtInit checks the procd script's syntax with sh -n, then runs
// its start_service with stand-ins for rc.common, UCI and procd, and
// checks the command line it builds.
func TestOpenWrtInit(t *testing.T) {
	script := filepath.Join(distDir, "openwrt", "microlink.init")
	if out, err := exec.Command("sh", "-n", script).CombinedOutput(); err != nil {
		t.Fatalf("sh -n: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(distDir, "openwrt", "microlink.config")); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	stubs := `
config_load() { :; }
config_get() { eval "v=\${UCI_$3-}"; [ -n "$v" ] || v="$4"; eval "$1=\$v"; }
config_get_bool() { config_get "$@"; }
procd_open_instance() { :; }
procd_set_param() { k=$1; shift; if [ "$k" = command ]; then CMD="$*"; else echo "param $k $*"; fi; }
procd_append_param() { shift; CMD="$CMD $*"; }
procd_close_instance() { echo "command $CMD"; }
`
	// The script's first line runs /etc/rc.common; source it instead.
	body, err := os.ReadFile(script)
	if err != nil {
		t.Fatal(err)
	}
	run := stubs + string(body) + "\nstart_service\n"
	cmd := exec.Command("sh", "-c", run)
	cmd.Env = append(os.Environ(), "UCI_authkey=tskey-secret", "UCI_hostname=router", "UCI_statedir="+dir+"/ml",
		"UCI_shields_up=1", "UCI_socks5_server=localhost:1080", "UCI_web_listen=192.168.1.1:8088", "UCI_web_token=tok",
		"UCI_advertise_tags=tag:router")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("start_service: %v\n%s", err, out)
	}
	var argv []string
	for _, line := range strings.Split(string(out), "\n") {
		if c, ok := strings.CutPrefix(line, "command "); ok {
			argv = strings.Fields(c)
		}
	}
	if len(argv) < 2 || argv[0] != "/usr/bin/microlink" || argv[1] != "up" {
		t.Fatalf("no command:\n%s", out)
	}
	all := strings.Join(argv, " ")
	for _, want := range []string{"--statedir=" + dir + "/ml", "--hostname=router", "--shields-up", "--socks5-server=localhost:1080", "--web-token=tok", "--advertise-tags=tag:router"} {
		if !strings.Contains(all, want) {
			t.Errorf("command lacks %s: %s", want, all)
		}
	}
	if strings.Contains(all, "tskey-secret") || !strings.Contains(string(out), "param env TS_AUTHKEY=tskey-secret") {
		t.Errorf("the auth key must go through the environment:\n%s", out)
	}
	if st, err := os.Stat(dir + "/ml"); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("state directory: %v %v", st, err)
	}
	checkUpFlags(t, argv[2:])
}
