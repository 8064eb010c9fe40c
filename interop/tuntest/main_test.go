// Package tuntest runs "microlink up --tun" and its subnet router and exit
// node features against real tailscaled peers, with the host's own ping,
// TCP and UDP going through the TUN device.
//
// Each test builds a small internet out of network namespaces: the test
// binary's own namespace (made by lab.RunInNetns) is the internet, holding
// the lab's control, DERP and STUN servers on 198.18.0.1; hosts are
// namespaces joined to it by veth pairs (198.18.N.2, routed through
// 198.18.N.1); LANs behind routers use 198.19.N.0/24. The microlink
// daemon and each real tailscaled run in a host namespace of their own,
// so that their routes and rules touch nothing else.
//
// The tests need root, the ip, nft and ping commands and /dev/net/tun;
// without them they are skipped.
package tuntest

import (
	"os"
	"os/exec"
	"testing"

	"github.com/microlink-go/microlink/interop/lab"
)

func TestMain(m *testing.M) {
	code := lab.RunInNetns(m)
	lab.RemoveMicrolinkCLI()
	os.Exit(code)
}

// needNetwork skips the test unless it can build namespaces and TUN
// devices.
func needNetwork(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces and TUN devices")
	}
	if err := lab.TUNAvailable(); err != nil {
		t.Skipf("needs TUN mode: %v", err)
	}
	for _, c := range []string{"ip", "nft", "ping", "setpriv"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Skipf("needs the %s command (packages iproute2, nftables, iputils-ping, util-linux)", c)
		}
	}
}
