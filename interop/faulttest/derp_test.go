package faulttest

import (
	"context"
	"testing"
	"time"

	"github.com/microlink-go/microlink/interop/lab"
	"tailscale.com/ipn/ipnstate"
)

// TestDERPRestart: the DERP server relaying between the node and a real
// peer (which never goes direct) crashes and comes back 3 s later.
// Relayed traffic resumes both ways within 10 s of its return, and the
// node keeps its home region, at control too.
func TestDERPRestart(t *testing.T) {
	l := lab.Start(t, lab.Options{})
	ts := l.StartTailscaled(t, lab.TSOptions{Hostname: "real-peer", NeverDirect: true})
	n := startNode(t, l, l.ControlURL, "ml-derp")
	waitFor(t, 5*time.Second, "real-peer in the netmap", func() bool { return hasPeer(n, "real-peer") })
	trafficBothWays(t, n, ts, 10*time.Second)
	if p, _ := n.Peer("real-peer"); p.Path != "derp" || p.DERPRegion != lab.DERPRegionID {
		t.Fatalf("traffic to real-peer goes %q (region %d), want relayed through %d", p.Path, p.DERPRegion, lab.DERPRegionID)
	}

	l.StopDERP(t)
	time.Sleep(3 * time.Second)
	l.ResumeDERP(t)
	took := trafficBothWays(t, n, ts, 10*time.Second)
	t.Logf("relayed traffic both ways %v after the DERP server came back", took.Round(time.Millisecond))

	if got := n.Status().HomeDERP; got != lab.DERPRegionID {
		t.Errorf("home region %d after the restart, want %d", got, lab.DERPRegionID)
	}
	if p, _ := n.Peer("real-peer"); p.Path != "derp" || p.DERPRegion != lab.DERPRegionID {
		t.Errorf("traffic to real-peer goes %q (region %d) after the restart", p.Path, p.DERPRegion)
	}
	if node := l.Control.Node(parseNodeKey(t, n.Status().NodeKey)); node == nil || node.HomeDERP != lab.DERPRegionID {
		t.Errorf("control's record of the node's home region: %+v", node)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := ts.WaitStatus(ctx, func(st *ipnstate.Status) bool {
		p := lab.FindPeer(st, "ml-derp")
		return p != nil && p.Relay == "lab"
	}); err != nil {
		t.Errorf("the real peer does not see the node's home region as lab: %v", err)
	}
}
