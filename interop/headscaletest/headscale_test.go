package headscaletest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/microlink-go/microlink/interop/lab"
	"tailscale.com/tailcfg"
)

// headscaleVersion is the version build-headscale.sh builds, pinned by
// the module in the interop module's headscale directory; a binary from
// $MICROLINK_HEADSCALE_BIN must be this version too.
const headscaleVersion = "v0.27.1"

// envHeadscaleBin names a directory holding a prebuilt headscale binary.
const envHeadscaleBin = "MICROLINK_HEADSCALE_BIN"

// buildTimeout bounds a build of headscale by build-headscale.sh.
const buildTimeout = 8 * time.Minute

// The prefixes headscale allocates node addresses from.
var (
	prefix4 = netip.MustParsePrefix("100.64.0.0/10")
	prefix6 = netip.MustParsePrefix("fd7a:115c:a1e0::/48")
)

// baseDomain is the MagicDNS domain of the headscale tailnet.
const baseDomain = "hs.test"

var binOnce struct {
	sync.Once
	path string
	err  error
}

// headscaleBinary returns the path of the headscale binary: the one in
// $MICROLINK_HEADSCALE_BIN, or else one built (or found in the cache) by
// build-headscale.sh.
func headscaleBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() { binOnce.path, binOnce.err = findOrBuild() })
	if binOnce.err != nil {
		t.Fatalf("no headscale %s binary: %v", headscaleVersion, binOnce.err)
	}
	return binOnce.path
}

func findOrBuild() (string, error) {
	dir := os.Getenv(envHeadscaleBin)
	if dir == "" {
		script, err := filepath.Abs(filepath.Join("..", "build-headscale.sh"))
		if err != nil {
			return "", err
		}
		ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
		defer cancel()
		var stdout, stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, "sh", script)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			return "", fmt.Errorf("%s (set %s to a directory holding headscale to skip the build): %v\n%s",
				script, envHeadscaleBin, err, stderr.Bytes())
		}
		dir = strings.TrimSpace(stdout.String())
	}
	path := filepath.Join(dir, "headscale")
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return "", fmt.Errorf("%s is not an executable file", path)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "version", "-o", "json").Output()
	if err != nil {
		return "", fmt.Errorf("%s version: %v", path, err)
	}
	var v struct{ Version string }
	if err := json.Unmarshal(out, &v); err != nil || v.Version != headscaleVersion {
		return "", fmt.Errorf("%s is version %q, want %s (%v)", path, v.Version, headscaleVersion, err)
	}
	return path, nil
}

// headscale is a running headscale server.
type headscale struct {
	// URL is its base URL, for --login-server.
	URL string

	bin, dir, config, logFile string
	policyFile                string // "" without a policy

	cmd      *exec.Cmd
	exited   chan struct{}
	exitErr  error
	stopOnce sync.Once
}

// startHeadscale starts headscale on the lab's listen address with a
// fresh database and a DERP map holding only the lab's DERP region, and
// waits until it answers. It is stopped by t.Cleanup, which prints the
// tail of its log if the test failed or $MICROLINK_TEST_DEBUG is set.
// Without a policy, every node may reach every other.
func startHeadscale(t *testing.T, l *lab.Lab) *headscale {
	t.Helper()
	return startHeadscalePolicy(t, l, "")
}

// startHeadscalePolicy is startHeadscale with an ACL policy: policy is
// the HuJSON text of the policy file, or "" for none.
func startHeadscalePolicy(t *testing.T, l *lab.Lab, policy string) *headscale {
	t.Helper()
	bin := headscaleBinary(t)
	// Unix socket paths are limited to 108 bytes: keep the directory short.
	dir, err := os.MkdirTemp("", "mlhs-")
	if err != nil {
		t.Fatal(err)
	}
	h := &headscale{
		bin:     bin,
		dir:     dir,
		config:  filepath.Join(dir, "config.yaml"),
		logFile: filepath.Join(dir, "headscale.log"),
		exited:  make(chan struct{}),
	}
	t.Cleanup(func() {
		h.stop()
		if t.Failed() || os.Getenv("MICROLINK_TEST_DEBUG") != "" {
			h.printLogTail(t, 200)
		}
		os.RemoveAll(dir)
	})
	ports := make([]int, 3)
	for i := range ports {
		ports[i] = freePort(t, l.ListenAddr())
	}
	host := l.ListenAddr().String()
	h.URL = "http://" + net.JoinHostPort(host, strconv.Itoa(ports[0]))

	derpFile := filepath.Join(dir, "derp.yaml")
	if err := os.WriteFile(derpFile, derpMapYAML(l.DERPMap), 0o600); err != nil {
		t.Fatal(err)
	}
	if policy != "" {
		h.policyFile = filepath.Join(dir, "policy.hujson")
		if err := os.WriteFile(h.policyFile, []byte(policy), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := fmt.Sprintf(configTemplate,
		h.URL,
		net.JoinHostPort(host, strconv.Itoa(ports[0])),
		net.JoinHostPort(host, strconv.Itoa(ports[1])),
		net.JoinHostPort(host, strconv.Itoa(ports[2])),
		filepath.Join(dir, "noise_private.key"),
		prefix4, prefix6,
		derpFile,
		filepath.Join(dir, "db.sqlite"),
		h.policyFile,
		baseDomain,
		filepath.Join(dir, "headscale.sock"),
	)
	if err := os.WriteFile(h.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := h.start(); err != nil {
		t.Fatalf("starting headscale: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := h.waitHealthy(ctx); err != nil {
		t.Fatalf("headscale not serving: %v", err)
	}
	return h
}

// configTemplate is headscale's configuration: every listener on the
// lab's address, nothing fetched from the internet (no DERP map URL, no
// update check, no logtail), no embedded DERP server.
const configTemplate = `server_url: %s
listen_addr: %s
metrics_listen_addr: %s
grpc_listen_addr: %s
grpc_allow_insecure: false
noise:
  private_key_path: %s
prefixes:
  v4: %s
  v6: %s
  allocation: sequential
derp:
  server:
    enabled: false
  urls: []
  paths:
    - %s
  auto_update_enabled: false
disable_check_updates: true
ephemeral_node_inactivity_timeout: 30m
database:
  type: sqlite
  sqlite:
    path: %s
    write_ahead_log: true
log:
  level: info
  format: text
policy:
  mode: file
  path: %q
dns:
  magic_dns: true
  base_domain: %s
  override_local_dns: false
  nameservers:
    global: []
  extra_records:
    - name: "grafana.%[11]s"
      type: "A"
      value: "100.64.99.20"
unix_socket: %s
unix_socket_permission: "0770"
logtail:
  enabled: false
randomize_client_port: false
`

// derpMapYAML writes m in the form headscale's derp.paths files take: the
// YAML decoding of tailcfg.DERPMap, whose keys are the lower-cased Go
// field names.
func derpMapYAML(m *tailcfg.DERPMap) []byte {
	var b bytes.Buffer
	b.WriteString("regions:\n")
	ids := make([]int, 0, len(m.Regions))
	for id := range m.Regions {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	for _, id := range ids {
		r := m.Regions[id]
		fmt.Fprintf(&b, "  %d:\n    regionid: %d\n    regioncode: %q\n    regionname: %q\n    nodes:\n",
			id, r.RegionID, r.RegionCode, r.RegionName)
		for _, n := range r.Nodes {
			fmt.Fprintf(&b, "      - name: %q\n        regionid: %d\n        hostname: %q\n", n.Name, n.RegionID, n.HostName)
			fmt.Fprintf(&b, "        ipv4: %q\n        ipv6: %q\n", n.IPv4, n.IPv6)
			fmt.Fprintf(&b, "        derpport: %d\n        stunport: %d\n", n.DERPPort, n.STUNPort)
			fmt.Fprintf(&b, "        insecurefortests: %t\n", n.InsecureForTests)
		}
	}
	return b.Bytes()
}

// freePort returns a TCP port that was free on addr a moment ago. The
// test's network namespace is its own, so nothing else takes it.
func freePort(t *testing.T, addr netip.Addr) int {
	t.Helper()
	ln, err := net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func (h *headscale) start() error {
	logFile, err := os.Create(h.logFile)
	if err != nil {
		return err
	}
	defer logFile.Close() // the child holds its own copy
	cmd := exec.Command(h.bin, "-c", h.config, "serve")
	cmd.Env = h.env()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Dies with the test binary even if cleanups never run.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	h.cmd = cmd
	go func() {
		h.exitErr = cmd.Wait()
		close(h.exited)
	}()
	return nil
}

// env is the environment of headscale and its CLI: the test's, without
// HEADSCALE_* variables, which would override the configuration file.
func (h *headscale) env() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HEADSCALE_") {
			env = append(env, kv)
		}
	}
	return env
}

func (h *headscale) waitHealthy(ctx context.Context) error {
	var lastErr error
	for {
		req, err := http.NewRequestWithContext(ctx, "GET", h.URL+"/health", nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET /health: %s", resp.Status)
		}
		lastErr = err
		select {
		case <-h.exited:
			return fmt.Errorf("headscale exited: %v", h.exitErr)
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), lastErr)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// setPolicy replaces the policy of a headscale started with one and has
// it reload the file, which it does on SIGHUP. The reload happens in the
// background.
func (h *headscale) setPolicy(t *testing.T, policy string) {
	t.Helper()
	if h.policyFile == "" {
		t.Fatal("setPolicy: headscale was started without a policy")
	}
	if err := os.WriteFile(h.policyFile, []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := h.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatalf("SIGHUP to headscale: %v", err)
	}
}

// stop terminates headscale and waits for it to exit.
func (h *headscale) stop() {
	h.stopOnce.Do(func() {
		if h.cmd == nil {
			return
		}
		h.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-h.exited:
		case <-time.After(5 * time.Second):
			h.cmd.Process.Kill()
			<-h.exited
		}
	})
}

func (h *headscale) printLogTail(t *testing.T, n int) {
	b, err := os.ReadFile(h.logFile)
	if err != nil {
		t.Logf("headscale log: %v", err)
		return
	}
	lines := strings.Split(string(bytes.TrimRight(b, "\n")), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	t.Logf("last %d lines of the headscale log:\n%s", len(lines), strings.Join(lines, "\n"))
}

// cliJSON runs "headscale ARGS -o json", which talks to the server over
// its unix socket, and decodes the output into v.
func (h *headscale) cliJSON(t *testing.T, v any, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	args = append([]string{"-c", h.config}, args...)
	args = append(args, "-o", "json")
	cmd := exec.CommandContext(ctx, h.bin, args...)
	cmd.Env = h.env()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("headscale %s: %v\n%s%s", strings.Join(args, " "), err, stdout.Bytes(), stderr.Bytes())
	}
	if err := json.Unmarshal(stdout.Bytes(), v); err != nil {
		t.Fatalf("headscale %s: decoding %q: %v", strings.Join(args, " "), stdout.Bytes(), err)
	}
}

// hsUser and hsNode hold the fields of headscale's JSON output the tests
// read.
type hsUser struct {
	ID   uint64 `json:"id"`
	Name string `json:"name"`
}

type hsNode struct {
	ID          uint64   `json:"id"`
	Name        string   `json:"name"`
	GivenName   string   `json:"given_name"`
	IPAddresses []string `json:"ip_addresses"`
	Online      bool     `json:"online"`
	User        hsUser   `json:"user"`
}

// createUser creates a user and returns its ID.
func (h *headscale) createUser(t *testing.T, name string) uint64 {
	t.Helper()
	var u hsUser
	h.cliJSON(t, &u, "users", "create", name)
	if u.ID == 0 || u.Name != name {
		t.Fatalf("users create %s: got %+v", name, u)
	}
	return u.ID
}

// preAuthKey creates a reusable pre-auth key for the user.
func (h *headscale) preAuthKey(t *testing.T, user uint64) string {
	t.Helper()
	var k struct {
		Key      string `json:"key"`
		Reusable bool   `json:"reusable"`
	}
	h.cliJSON(t, &k, "preauthkeys", "create", "--user", strconv.FormatUint(user, 10), "--reusable", "--expiration", "1h")
	if k.Key == "" || !k.Reusable {
		t.Fatalf("preauthkeys create: got %+v", k)
	}
	return k.Key
}

// nodes lists the nodes headscale knows.
func (h *headscale) nodes(t *testing.T) []hsNode {
	t.Helper()
	var nodes []hsNode
	h.cliJSON(t, &nodes, "nodes", "list")
	return nodes
}
