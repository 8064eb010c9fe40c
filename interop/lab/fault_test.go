package lab

import (
	"crypto/tls"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"tailscale.com/tailcfg"
	"tailscale.com/tstest/integration/testcontrol"
)

func noiseKey(t *testing.T, l *Lab) string {
	t.Helper()
	res, err := http.Get(l.ControlURL + "/key?v=142")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var k tailcfg.OverTLSPublicKeyResponse
	if err := json.NewDecoder(res.Body).Decode(&k); err != nil {
		t.Fatal(err)
	}
	return k.PublicKey.String()
}

// TestResetControl: the control server after a reset answers on the same
// URL with a new key, knows no node, and is configured as the first was.
func TestResetControl(t *testing.T) {
	configured := 0
	l := Start(t, Options{ConfigureControl: func(*testcontrol.Server) { configured++ }})
	l.StartTailscaled(t, TSOptions{Hostname: "peer"})
	if n := l.Control.NumNodes(); n != 1 {
		t.Fatalf("control knows %d nodes, want the peer", n)
	}
	old, first := noiseKey(t, l), l.Control
	l.ResetControl(t)
	if l.Control == first || configured != 2 {
		t.Fatalf("ResetControl kept the server (configured %d times)", configured)
	}
	if k := noiseKey(t, l); k == old {
		t.Fatalf("same Noise key %s after the reset", k)
	}
	if n := l.Control.NumNodes(); n != 0 {
		t.Fatalf("the new server knows %d nodes", n)
	}
}

// TestStopResumeDERP: a stopped DERP server refuses connections, and a
// resumed one serves on the same address again.
func TestStopResumeDERP(t *testing.T) {
	l := Start(t, Options{})
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, Timeout: 5 * time.Second}
	probe := func() error {
		res, err := c.Get(l.DERPURL + "/derp/probe")
		if err == nil {
			res.Body.Close()
		}
		return err
	}
	if err := probe(); err != nil {
		t.Fatalf("probe before the stop: %v", err)
	}
	first := l.DERP
	l.StopDERP(t)
	c.CloseIdleConnections()
	if err := probe(); err == nil {
		t.Fatal("a stopped DERP server answered")
	}
	l.ResumeDERP(t)
	if err := probe(); err != nil {
		t.Fatalf("probe after resuming: %v", err)
	}
	if l.DERP == first {
		t.Fatal("the resumed DERP server kept its old clients' state")
	}
}
