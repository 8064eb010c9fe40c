package nattest

import (
	"context"
	"encoding/json"
	"net"
	"net/netip"
	"strings"
	"testing"

	"tailscale.com/net/stunserver"
	"tailscale.com/tailcfg"
	"tailscale.com/tstest/integration/testcontrol"

	"github.com/microlink-go/microlink/interop/lab"
)

// startLabTwoSTUN starts the lab with a second DERP region whose STUN
// server listens on another port, so that a netcheck gets two answers and
// can tell whether the NAT maps each destination to a new port.
func startLabTwoSTUN(t *testing.T) *lab.Lab {
	t.Helper()
	setupInternet(t)
	ctx, cancel := context.WithCancel(context.Background())
	s := stunserver.New(ctx)
	if err := s.Listen(netip.AddrPortFrom(serverAddr, 0).String()); err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); s.Serve() }()
	t.Cleanup(func() { cancel(); <-done })
	stunPort := s.LocalAddr().(*net.UDPAddr).Port
	logs := &logBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("lab log:\n%s", tail(logs.String(), 150))
		}
	})
	return lab.Start(t, lab.Options{
		ListenAddr: serverAddr,
		Logf:       func(format string, args ...any) { logf(logs, format, args...) },
		ConfigureControl: func(c *testcontrol.Server) {
			r := *c.DERPMap.Regions[lab.DERPRegionID]
			n := *r.Nodes[0]
			n.Name, n.RegionID, n.STUNPort = "second", lab.DERPRegionID+1, stunPort
			r.RegionID, r.RegionCode, r.RegionName, r.Nodes = lab.DERPRegionID+1, "lab2", "Lab two", []*tailcfg.DERPNode{&n}
			c.DERPMap.Regions[r.RegionID] = &r
		},
	})
}

// TestNetcheck runs "microlink netcheck" on a daemon behind each kind of
// NAT: UDP works and the public address is the router's; the mapping
// varies by destination only behind the endpoint-dependent NAT; both
// regions have a latency.
func TestNetcheck(t *testing.T) {
	needNetwork(t)
	for _, tc := range []struct {
		name, nat string
		varies    bool
	}{
		{"endpoint-independent", natEIM, false},
		{"endpoint-dependent", natEDM, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := startLabTwoSTUN(t)
			s := newSite(t, "nc", tc.nat)
			h := s.newHost(t, "ml")
			d := startDaemon(t, l, h.NS, "ml-netcheck")
			var r struct {
				UDP, IPv4             bool
				GlobalV4              string
				MappingVariesByDestIP *bool
				PreferredDERP         int
				RegionLatency         []struct {
					ID        int
					Code      string
					LatencyMS float64
				}
			}
			out, err := d.cli("netcheck", "--json")
			if err != nil || json.Unmarshal([]byte(out), &r) != nil {
				t.Fatalf("netcheck --json: %v\n%s", err, out)
			}
			global, err := netip.ParseAddrPort(r.GlobalV4)
			if !r.UDP || !r.IPv4 || err != nil || global.Addr() != s.WAN {
				t.Errorf("report %+v; want UDP and the router's address %v", r, s.WAN)
			}
			if r.MappingVariesByDestIP == nil || *r.MappingVariesByDestIP != tc.varies {
				t.Errorf("MappingVariesByDestIP %v, want %v:\n%s", r.MappingVariesByDestIP, tc.varies, out)
			}
			if len(r.RegionLatency) != 2 || r.PreferredDERP == 0 {
				t.Errorf("regions %+v, preferred %d", r.RegionLatency, r.PreferredDERP)
			}
			text, err := d.cli("netcheck")
			for _, want := range []string{"* UDP: true", "* IPv4: yes, " + s.WAN.String(), "MappingVariesByDestIP: " + map[bool]string{true: "true", false: "false"}[tc.varies], "- lab: ", "- lab2: ", "Nearest DERP: Lab"} {
				if err != nil || !strings.Contains(text, want) {
					t.Errorf("netcheck lacks %q: %v\n%s", want, err, text)
				}
			}
		})
	}
}
