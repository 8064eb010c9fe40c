package headscaletest

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/microlink-go/microlink"
	"github.com/microlink-go/microlink/interop/lab"
)

// restart stops headscale (SIGTERM) and starts it again with the same
// configuration and database, and waits until it answers.
func (h *headscale) restart(t *testing.T) {
	t.Helper()
	h.stop()
	h.stopOnce = sync.Once{}
	h.exited = make(chan struct{})
	if err := h.start(); err != nil {
		t.Fatalf("restarting headscale: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := h.waitHealthy(ctx); err != nil {
		t.Fatalf("headscale not serving after the restart: %v", err)
	}
}

// singleUseKey creates a pre-auth key that registers one node.
func (h *headscale) singleUseKey(t *testing.T, user uint64) string {
	t.Helper()
	var k struct {
		Key      string `json:"key"`
		Reusable bool   `json:"reusable"`
	}
	h.cliJSON(t, &k, "preauthkeys", "create", "--user", strconv.FormatUint(user, 10), "--expiration", "1h")
	if k.Key == "" || k.Reusable {
		t.Fatalf("preauthkeys create: got %+v", k)
	}
	return k.Key
}

// expireKey expires a pre-auth key.
func (h *headscale) expireKey(t *testing.T, user uint64, key string) {
	t.Helper()
	var out any
	h.cliJSON(t, &out, "preauthkeys", "expire", "--user", strconv.FormatUint(user, 10), key)
}

// mlNodes returns headscale's records of the microlink node.
func mlNodes(t *testing.T, hs *headscale) []hsNode {
	var out []hsNode
	for _, nd := range hs.nodes(t) {
		if nd.GivenName == mlName {
			out = append(out, nd)
		}
	}
	return out
}

// awaitNewStream waits until n is Connected on a map stream newer than
// the maps it had counted, and returns how long that took.
func awaitNewStream(t *testing.T, n *microlink.Node, maps uint64, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	waitFor(t, within, "a new map stream", func() bool {
		return n.Stats().MapUpdates > maps && n.State() == microlink.Connected
	})
	return time.Since(start)
}

// TestHeadscaleRestarts: Headscale restarts five times; each time the
// node is back on the map poll and traffic with a real peer flows both
// ways, and over all of it the node sends one register request, its first
// login, and stays one node to Headscale.
func TestHeadscaleRestarts(t *testing.T) {
	l := lab.Start(t, lab.Options{})
	hs := startHeadscale(t, l)
	key := hs.preAuthKey(t, hs.createUser(t, "lab"))
	n := startNode(t, hs, key, t.TempDir())
	ts := l.StartTailscaled(t, lab.TSOptions{Hostname: peerName, ControlURL: hs.URL, AuthKey: key})
	waitFor(t, 10*time.Second, peerName+" in the netmap", func() bool { _, ok := n.Peer(peerName); return ok })
	lab.TrafficBothWays(t, n, ts, 10*time.Second)
	before := mlNodes(t, hs)
	if len(before) != 1 {
		t.Fatalf("headscale's records of %s: %+v", mlName, before)
	}

	for i := range 5 {
		maps := n.Stats().MapUpdates
		hs.restart(t)
		back := awaitNewStream(t, n, maps, 15*time.Second)
		took := lab.TrafficBothWays(t, n, ts, 10*time.Second)
		t.Logf("restart %d: map stream back %v after headscale answered, traffic both ways %v later", i+1, back.Round(time.Millisecond), took.Round(time.Millisecond))
	}
	if got := n.Stats().RegisterRequests; got != 1 {
		t.Errorf("microlink counted %d register requests, want 1 (the first login)", got)
	}
	if after := mlNodes(t, hs); len(after) != 1 || after[0].ID != before[0].ID {
		t.Errorf("headscale's records of %s went from %+v to %+v", mlName, before, after)
	}
}

// TestHeadscaleSingleUseKeyExpired: the node joined with a single-use key,
// which is then expired. Headscale restarts and the node carries on; the
// node restarts from its state directory (with the same, now dead, key in
// its configuration) and carries on: neither needs a new key, and the node
// sends the dead key to no one.
func TestHeadscaleSingleUseKeyExpired(t *testing.T) {
	l := lab.Start(t, lab.Options{})
	hs := startHeadscale(t, l)
	user := hs.createUser(t, "lab")
	once := hs.singleUseKey(t, user)
	stateDir := t.TempDir()
	n := startNode(t, hs, once, stateDir)
	ts := l.StartTailscaled(t, lab.TSOptions{Hostname: peerName, ControlURL: hs.URL, AuthKey: hs.preAuthKey(t, user)})
	lab.TrafficBothWays(t, n, ts, 10*time.Second)
	before := mlNodes(t, hs)
	hs.expireKey(t, user, once)

	// The key is dead indeed: a new node cannot join with it.
	other, err := microlink.New(microlink.Config{AuthKey: once, ControlURL: hs.URL, Hostname: "ml-other", StateDir: t.TempDir(), Port: -1, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var re *microlink.RegistrationError
	if err := other.Start(ctx); !errors.As(err, &re) {
		t.Fatalf("a new node with the expired key: Start = %v, want a RegistrationError", err)
	}
	t.Logf("a new node with the expired key is refused: %v", re)
	other.Close()

	maps := n.Stats().MapUpdates
	hs.restart(t)
	back := awaitNewStream(t, n, maps, 15*time.Second)
	took := lab.TrafficBothWays(t, n, ts, 10*time.Second)
	t.Logf("after the headscale restart: map stream back in %v, traffic both ways %v later", back.Round(time.Millisecond), took.Round(time.Millisecond))
	if got := n.Stats().RegisterRequests; got != 1 {
		t.Errorf("microlink counted %d register requests, want 1 (the first login)", got)
	}

	n.Close()
	start := time.Now()
	n = startNode(t, hs, once, stateDir)
	up := time.Since(start)
	took = lab.TrafficBothWays(t, n, ts, 15*time.Second)
	t.Logf("after the microlink restart: Connected in %v, traffic both ways %v later", up.Round(time.Millisecond), took.Round(time.Millisecond))
	if got := n.Stats().RegisterRequests; got != 0 {
		t.Errorf("the restarted node sent %d register requests, want none", got)
	}
	if after := mlNodes(t, hs); len(after) != 1 || after[0].ID != before[0].ID {
		t.Errorf("headscale's records of %s went from %+v to %+v", mlName, before, after)
	}
}

// TestHeadscaleNodeDeleted: an administrator deletes the node ("headscale
// nodes delete"). Headscale keeps the deleted node's map stream open (with
// keep-alives), so the node learns of it at its next request: here the map
// poll and lite update that follow a network change (Rebind); a changed
// endpoint or a restart would do the same. Headscale answers 404, and the
// node logs in again with its (reusable) auth key as a new node, and traffic
// with a real peer resumes.
func TestHeadscaleNodeDeleted(t *testing.T) {
	l := lab.Start(t, lab.Options{})
	hs := startHeadscale(t, l)
	key := hs.preAuthKey(t, hs.createUser(t, "lab"))
	n := startNode(t, hs, key, t.TempDir())
	ts := l.StartTailscaled(t, lab.TSOptions{Hostname: peerName, ControlURL: hs.URL, AuthKey: key})
	lab.TrafficBothWays(t, n, ts, 10*time.Second)
	before := mlNodes(t, hs)
	if len(before) != 1 {
		t.Fatalf("headscale's records of %s: %+v", mlName, before)
	}

	var out any
	hs.cliJSON(t, &out, "nodes", "delete", "--identifier", strconv.FormatUint(before[0].ID, 10), "--force")
	start := time.Now()
	if err := n.Rebind(); err != nil {
		t.Fatal(err)
	}
	var after []hsNode
	waitFor(t, 20*time.Second, "the node to log in again", func() bool {
		after = mlNodes(t, hs)
		return len(after) == 1 && after[0].ID != before[0].ID && n.State() == microlink.Connected
	})
	back := time.Since(start)
	took := lab.TrafficBothWays(t, n, ts, 15*time.Second)
	t.Logf("logged in again as node %d %v after the deletion and rebind; traffic both ways %v later", after[0].ID, back.Round(time.Millisecond), took.Round(time.Millisecond))
	if got := n.Stats().RegisterRequests; got != 2 {
		t.Errorf("microlink counted %d register requests, want 2 (the first login and the new one)", got)
	}
}
