package faulttest

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microlink-go/microlink"
	"github.com/microlink-go/microlink/interop/lab"
	"tailscale.com/tstest/integration/testcontrol"
)

func TestMain(m *testing.M) { os.Exit(lab.RunInNetns(m)) }

// registerCounter counts the register requests a testcontrol server
// receives, through its rate-limit hook.
type registerCounter struct{ n atomic.Int64 }

func (c *registerCounter) configure(s *testcontrol.Server) {
	s.MaybeRateLimitRegister = func() (bool, string, string) {
		c.n.Add(1)
		return false, "", ""
	}
}

func (c *registerCounter) count() int64 { return c.n.Load() }

// startNode starts a microlink node on the lab at controlURL (the lab's,
// or a forwarder to it) and waits until it is Connected.
func startNode(t *testing.T, l *lab.Lab, controlURL, hostname string) *microlink.Node {
	t.Helper()
	return lab.StartNode(t, lab.NodeOptions{ControlURL: controlURL, AuthKey: l.AuthKey, Hostname: hostname})
}

// waitFor polls cond every 20 ms until it holds and returns how long that
// took; it fails t if d passes first.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	lab.WaitFor(t, d, what, cond)
	return time.Since(start)
}

func hasPeer(n *microlink.Node, name string) bool {
	_, ok := n.Peer(name)
	return ok
}

// trafficBothWays is lab.TrafficBothWays.
func trafficBothWays(t *testing.T, n *microlink.Node, ts *lab.Tailscaled, within time.Duration) time.Duration {
	t.Helper()
	return lab.TrafficBothWays(t, n, ts, within)
}

// needFirewall skips the test where the lab cannot give it a firewall of
// its own, as the other namespace tests of the interop module do (nattest):
// without root, or without nftables. CI runs as root with nftables.
func needFirewall(t *testing.T) {
	t.Helper()
	if !lab.InNetns() {
		t.Skip("changes the firewall: needs root, so that lab.RunInNetns gives the test a network namespace of its own")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skipf("needs the nft command (package nftables): %v", err)
	}
}

// blackHole drops every TCP packet to or from the port of addr (a
// loopback address of a forwarder) with nftables until the
// returned function (also run by t.Cleanup) removes the rule. Nothing is
// refused or reset: the connections just go silent, as behind a broken
// middlebox. Call needFirewall first.
func blackHole(t *testing.T, addr string) (end func()) {
	t.Helper()
	port := netip.MustParseAddrPort(addr).Port()
	table := fmt.Sprintf("mlfault%d", port)
	rules := fmt.Sprintf(`table inet %s {
	chain out {
		type filter hook output priority 0; policy accept;
		tcp dport %d drop
		tcp sport %d drop
	}
}
`, table, port, port)
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	var once sync.Once
	end = func() {
		once.Do(func() {
			if out, err := exec.Command("nft", "delete", "table", "inet", table).CombinedOutput(); err != nil {
				t.Errorf("nft delete table %s: %v: %s", table, err, out)
			}
		})
	}
	t.Cleanup(end)
	return end
}

// addrOf returns the first IPv4 address of a testcontrol node.
func addrOf(t *testing.T, s *testcontrol.Server, nodeKey string) netip.Addr {
	t.Helper()
	node := s.Node(parseNodeKey(t, nodeKey))
	if node == nil {
		t.Fatalf("control does not know %s", nodeKey)
	}
	for _, p := range node.Addresses {
		if p.Addr().Is4() {
			return p.Addr()
		}
	}
	t.Fatalf("control gives %s no IPv4 address: %v", nodeKey, node.Addresses)
	return netip.Addr{}
}
