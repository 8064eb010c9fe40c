package tuntest

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/microlink-go/microlink/interop/lab"
)

// ourTable is the routing table microlink uses (tun.Table).
const ourTable = "28012" // 0x6d6c

// hostState describes what microlink may have added to a namespace: its
// TUN device, its rules, the routes of its table and its nftables tables.
type hostState struct {
	device, rules, routes, nft string
}

var ourRule = regexp.MustCompile(`(?m)^53[1-7]0:.*$`)

func stateOf(t *testing.T, ns string) hostState {
	t.Helper()
	var s hostState
	if out, err := lab.NetnsCommand(ns, "ip", "link", "show", "microlink0").CombinedOutput(); err == nil {
		s.device = string(out)
	}
	for _, fam := range []string{"-4", "-6"} {
		for _, r := range ourRule.FindAllString(lab.MustRun(t, ns, "ip", fam, "rule", "show"), -1) {
			s.rules += r + "\n"
		}
		// A table that never held a route "does not exist".
		out, _ := lab.NetnsCommand(ns, "ip", fam, "route", "show", "table", ourTable).CombinedOutput()
		if !strings.Contains(string(out), "does not exist") {
			s.routes += string(out)
		}
	}
	if out, err := lab.NetnsCommand(ns, "nft", "list", "tables").CombinedOutput(); err == nil && strings.Contains(string(out), "microlink") {
		s.nft = string(out)
	}
	return s
}

func (s hostState) empty() bool { return s == hostState{} }

// TestKilledRunCleanedUp: a daemon killed with SIGKILL leaves its rules
// and throw routes behind (the device goes with the process); the next
// start removes them, and its own clean exit leaves nothing at all.
func TestKilledRunCleanedUp(t *testing.T) {
	needNetwork(t)
	l := startLab(t)
	h := newHost(t, "ml")
	if s := stateOf(t, h.NS); !s.empty() {
		t.Fatalf("fresh namespace not empty: %+v", s)
	}
	d := lab.StartDaemon(t, lab.DaemonOptions{Hostname: "ml-kill", ControlURL: l.ControlURL, AuthKey: l.AuthKey, Netns: h.NS,
		// An exit node that is not there: the default routes go into the
		// device, and LAN access adds throw routes that outlive it.
		Args: []string{"--tun", "--exit-node=100.64.0.99", "--exit-node-allow-lan-access"}})
	waitFor(t, 10*time.Second, "the throw route", func() bool {
		return strings.Contains(stateOf(t, h.NS).routes, "throw")
	})
	d.Kill()
	left := stateOf(t, h.NS)
	if strings.Count(left.rules, "\n") != 8 || !strings.Contains(left.routes, "throw 198.18.") {
		t.Fatalf("after SIGKILL, want 8 rules and a throw route left, got %+v", left)
	}

	// The next run: only its own state, once.
	d.Opts.Args = []string{"--tun"}
	d.Restart(t)
	s := stateOf(t, h.NS)
	if strings.Count(s.rules, "\n") != 8 || strings.Contains(s.routes, "throw") || !strings.Contains(s.routes, "100.64.0.0/10 dev microlink0") || s.device == "" {
		t.Fatalf("after the restart: %+v", s)
	}
	d.Stop()
	if s := stateOf(t, h.NS); !s.empty() {
		t.Fatalf("after a clean exit: %+v", s)
	}
}

// TestTUNWithoutPrivileges: --tun as an ordinary user is refused with a
// clear error, and nothing on the host changes.
func TestTUNWithoutPrivileges(t *testing.T) {
	needNetwork(t)
	l := startLab(t)
	h := newHost(t, "ml")
	d := lab.StartDaemon(t, lab.DaemonOptions{Hostname: "ml-user", ControlURL: l.ControlURL, AuthKey: l.AuthKey, Netns: h.NS,
		Args: []string{"--tun"}, UID: 65534, NoWait: true})
	select {
	case <-d.Exited():
	case <-time.After(10 * time.Second):
		t.Fatal("microlink up --tun as nobody is still running")
	}
	if d.ExitErr() == nil || !strings.Contains(d.Log(), "TUN mode needs root") {
		t.Fatalf("exit %v, log:\n%s", d.ExitErr(), d.Log())
	}
	if s := stateOf(t, h.NS); !s.empty() {
		t.Fatalf("the host changed: %+v", s)
	}
	if l.Control.NumNodes() != 0 {
		t.Fatalf("the node registered with control")
	}
}
