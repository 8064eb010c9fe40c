package nattest

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/microlink-go/microlink/interop/lab"
)

var cliBuild struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// microlinkCLI builds the microlink command once per test binary and
// returns its path.
func microlinkCLI(t *testing.T) string {
	t.Helper()
	cliBuild.once.Do(func() {
		cliBuild.dir, cliBuild.err = os.MkdirTemp("", "nattest-cli-")
		if cliBuild.err != nil {
			return
		}
		cliBuild.path = filepath.Join(cliBuild.dir, "microlink")
		out, err := exec.Command("go", "build", "-buildvcs=false", "-o", cliBuild.path,
			"github.com/microlink-go/microlink/cmd/microlink").CombinedOutput()
		if err != nil {
			cliBuild.err = fmt.Errorf("go build microlink: %v\n%s", err, out)
		}
	})
	if cliBuild.err != nil {
		t.Fatal(cliBuild.err)
	}
	return cliBuild.path
}

// removeCLI deletes the built command; TestMain calls it.
func removeCLI() {
	if cliBuild.dir != "" {
		os.RemoveAll(cliBuild.dir)
	}
}

// daemon is a "microlink up" process in a host namespace.
type daemon struct {
	bin, stateDir string
	cmd           *exec.Cmd
	logs          *logBuffer
	done          chan struct{}
	stopOnce      sync.Once
}

// startDaemon runs "microlink up" in namespace ns with a state directory
// of its own and waits until its local API answers with state Connected.
func startDaemon(t *testing.T, l *lab.Lab, ns, hostname string) *daemon {
	t.Helper()
	// A short directory: the socket's path must fit in 108 bytes.
	dir, err := os.MkdirTemp("", "mlcli-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	d := launchDaemon(t, l.ControlURL, l.AuthKey, ns, hostname, dir)
	d.waitConnected(t)
	return d
}

// launchDaemon starts "microlink up" in namespace ns against the control
// server at controlURL, with state in dir and any extra flags, and does
// not wait for it. It is stopped when the test ends.
func launchDaemon(t *testing.T, controlURL, authKey, ns, hostname, dir string, extra ...string) *daemon {
	t.Helper()
	d := &daemon{bin: microlinkCLI(t), stateDir: dir, logs: &logBuffer{}, done: make(chan struct{})}
	args := []string{"netns", "exec", ns, d.bin, "up",
		"--authkey", authKey, "--hostname", hostname, "--login-server", controlURL,
		"--statedir", dir, "--port", "0", "--verbose"}
	d.cmd = exec.Command("ip", append(args, extra...)...)
	d.cmd.Stdout, d.cmd.Stderr = d.logs, d.logs
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		d.stop()
		if t.Failed() {
			t.Logf("log of microlink up %s:\n%s", hostname, tail(d.logs.String(), 200))
		}
	})
	return d
}

// waitConnected waits until the daemon's local API reports Connected.
func (d *daemon) waitConnected(t *testing.T) {
	t.Helper()
	waitFor(t, 30*time.Second, "microlink up to be connected", func() bool {
		st, err := d.status()
		return err == nil && st.State == "Running"
	})
}

// stop sends SIGTERM and waits for the daemon to exit (SIGKILL after 10 s).
func (d *daemon) stop() {
	d.stopOnce.Do(func() {
		d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(10 * time.Second):
			d.cmd.Process.Kill()
			<-d.done
		}
	})
}

// cli runs a microlink command against the daemon.
func (d *daemon) cli(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, d.bin, append(args, "--statedir", d.stateDir)...).CombinedOutput()
	return string(out), err
}

// cliStatus is the part of "microlink status --json" the tests read
// (tailscale's field names).
type cliStatus struct {
	State string `json:"BackendState"` // "Running" once connected
	Self  struct {
		Name      string   `json:"HostName"`
		Addresses []string `json:"TailscaleIPs"`
		NodeKey   string   `json:"PublicKey"`
	}
	Peers map[string]struct {
		Name       string  `json:"HostName"`
		Path       string  `json:"Path"`
		Endpoint   string  `json:"CurAddr"`
		DERPRegion int     `json:"DERPRegion"`
		LatencyMS  float64 `json:"LatencyMS"`
	} `json:"Peer"`
	Stats struct {
		MapUpdates       uint64 `json:"mapUpdates"`
		RegisterRequests uint64 `json:"registerRequests"`
	}
}

func (d *daemon) status() (cliStatus, error) {
	var st cliStatus
	out, err := d.cli("status", "--json")
	if err != nil {
		return st, fmt.Errorf("%v: %s", err, out)
	}
	err = json.Unmarshal([]byte(out), &st)
	return st, err
}

// localAPI sends a request to the daemon's local API socket.
func (d *daemon) localAPI(method, path string) (int, error) {
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", filepath.Join(d.stateDir, "microlink.sock"))
		},
	}, Timeout: 10 * time.Second}
	req, err := http.NewRequest(method, "http://microlink"+path, nil)
	if err != nil {
		return 0, err
	}
	res, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	res.Body.Close()
	return res.StatusCode, nil
}

// statusLine returns the line of "microlink status" about peer name.
func statusLine(out, name string) string {
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[1] == name {
			return line
		}
	}
	return ""
}
