// Package nattest proves microlink's direct paths and NAT traversal
// against a real tailscaled, and how the microlink daemon copes with the
// host's network and disk changing under it: an address change nobody
// announces, another control server, SIGKILL while it writes its state,
// a full disk.
//
// Each test builds a small internet out of network namespaces: the test
// binary's own namespace (made by lab.RunInNetns) is the internet, holding
// the lab's control, DERP and STUN servers on 198.18.0.1; sites are
// router namespaces joined to it by veth pairs, each with a LAN bridge
// 10.N.0.0/24 behind an nftables masquerade; hosts are namespaces on a
// LAN. A real tailscaled runs in TUN mode in one host namespace and a
// microlink node runs as a subprocess in another, so that every packet
// between them crosses the NATs the test set up. Public hosts sit on the
// internet itself, 198.18.N.2/24. The test binary runs in a mount
// namespace of its own (made by "ip netns exec"), where tests may mount
// a small tmpfs.
//
// The tests need root, the ip and nft commands and /dev/net/tun; without
// them they are skipped.
package nattest

import (
	"os"
	"os/exec"
	"testing"

	"github.com/microlink-go/microlink/interop/lab"
)

func TestMain(m *testing.M) {
	if os.Getenv(envHelper) != "" {
		os.Exit(helperMain())
	}
	code := lab.RunInNetns(m)
	removeCLI()
	os.Exit(code)
}

// needNetwork skips the test unless it can build namespaces, NATs and
// TUN devices.
func needNetwork(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	if err := lab.TUNAvailable(); err != nil {
		t.Skipf("needs TUN mode for the real tailscaled: %v", err)
	}
	for _, c := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Skipf("needs the %s command (packages iproute2, nftables)", c)
		}
	}
}
