package tuntest

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microlink-go/microlink/interop/lab"
	"tailscale.com/tstest/integration/testcontrol"
)

// The namespaces and traffic helpers of the lab, under short names.
type (
	host = lab.Host
	lan  = lab.LAN
)

var (
	newHost      = lab.NewInternetHost
	newLAN       = lab.NewLAN
	listenIn     = lab.ListenTCPIn
	listenUDPIn  = lab.ListenUDPIn
	serveHTTP    = lab.ServeHTTP
	httpClientIn = lab.HTTPClientIn
	fetch        = lab.Fetch
	get          = lab.Get
	udpEcho      = lab.UDPEcho
	checkUDP     = lab.CheckUDP
	pingFrom     = lab.PingFrom
	noPingFrom   = lab.NoPingFrom
)

// startLab starts the lab's servers on the internet address. Their logs
// are kept and printed only if the test fails.
func startLab(t testing.TB) *lab.Lab {
	t.Helper()
	return startLabWith(t, nil)
}

// startLabWith is startLab with configure, if not nil, applied to the
// control server.
func startLabWith(t testing.TB, configure func(*testcontrol.Server)) *lab.Lab {
	t.Helper()
	lab.SetupInternet(t)
	var mu sync.Mutex
	var logs strings.Builder
	t.Cleanup(func() {
		if t.Failed() {
			mu.Lock()
			t.Logf("lab log (tail):\n%s", tail(logs.String(), 80))
			mu.Unlock()
		}
	})
	return lab.Start(t, lab.Options{
		ListenAddr:       lab.InternetAddr,
		ConfigureControl: configure,
		Logf: func(format string, args ...any) {
			mu.Lock()
			fmt.Fprintf(&logs, format+"\n", args...)
			mu.Unlock()
		},
	})
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// waitFor polls cond until it holds or d passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	lab.WaitFor(t, d, what, cond)
}

func addrs(st lab.CLIStatus) (v4, v6 netip.Addr) {
	for _, s := range st.Self.Addresses {
		a := netip.MustParseAddr(s)
		if a.Is4() {
			v4 = a
		} else {
			v6 = a
		}
	}
	return v4, v6
}
