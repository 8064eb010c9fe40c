package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// natRun is one line of nat_times.jsonl, written by TestDirectPathCut.
type natRun struct {
	CutToDERPMs       int64 `json:"cutToDERPMs"`
	CutToDERPOneWayMs int64 `json:"cutToDERPOneWayMs"`
	StreamGapMs       int64 `json:"streamGapMs"`
	LiftToDirectMs    int64 `json:"liftToDirectMs"`
	StreamIntervalMs  int64 `json:"streamIntervalMs"`
	DatagramsSent     int   `json:"datagramsSent"`
	DatagramsEchoed   int   `json:"datagramsEchoed"`
	MaxGapMs          int64 `json:"maxGapMs"`
}

func (r *report) failover() {
	r.p("")
	r.p("## 6. Path failover through NATs")
	r.p("")
	if s, ok := r.read("failover.skip"); ok {
		r.p("Not measured in this run. %s", strings.TrimSpace(s))
		return
	}
	s, ok := r.read("nat_times.jsonl")
	if !ok {
		r.p("Not measured in this run.")
		if t, ok := r.read("failover.txt"); ok {
			r.p("")
			r.p("```")
			r.p("%s", tail(t, 15))
			r.p("```")
		}
		return
	}
	var runs []natRun
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		var n natRun
		if err := json.Unmarshal([]byte(line), &n); err == nil {
			runs = append(runs, n)
		}
	}
	if len(runs) == 0 {
		r.p("Not measured in this run: nat_times.jsonl holds no runs.")
		return
	}
	r.p("`TestDirectPathCut` of interop/nattest: microlink and a real tailscaled, each behind its own")
	r.p("endpoint-independent NAT (network namespaces, veth pairs, nftables masquerade), with control, DERP and")
	r.p("STUN between them. A UDP echo stream (one datagram every %d ms, from an OS socket on tailscaled's TUN to", runs[0].StreamIntervalMs)
	r.p("microlink and back) runs over the direct path; then nftables drops all UDP between the two NATs, at a random")
	r.p("moment of the 3 s heartbeat cycle. *one way* is when tailscaled's datagrams reach microlink again (over")
	r.p("DERP), *echoes* when the stream comes back both ways, *gap* the time between the last echo before the cut")
	r.p("and the first after it. *back to direct* runs from lifting the cut until both sides use the direct path again.")
	r.p("Goal: traffic continues over DERP within 5 s.")
	r.p("")
	r.p("| run | one way | echoes | gap | back to direct | datagrams echoed | goal met |")
	r.p("|---:|---:|---:|---:|---:|---:|---|")
	for i, n := range runs {
		r.p("| %d | %s | %s | %s | %s | %d of %d | %s |", i+1, secs(n.CutToDERPOneWayMs), secs(n.CutToDERPMs), secs(n.StreamGapMs),
			secs(n.LiftToDirectMs), n.DatagramsEchoed, n.DatagramsSent, yesNo(n.StreamGapMs <= 5000))
	}
	gaps := make([]int64, len(runs))
	backs := make([]int64, len(runs))
	for i, n := range runs {
		gaps[i], backs[i] = n.StreamGapMs, n.LiftToDirectMs
	}
	r.p("")
	r.p("Gap over %d runs: %s to %s; back to direct: %s to %s.", len(runs), secs(slices.Min(gaps)), secs(slices.Max(gaps)),
		secs(slices.Min(backs)), secs(slices.Max(backs)))
	r.p("")
	r.p("Why these figures: microlink pings its direct path every 3 s while traffic flows and retries an")
	r.p("unanswered ping twice; when none is answered within 1.2 s it sends over DERP as well, and tells the peer")
	r.p("over DERP (a call-me-maybe without the endpoint that stopped answering), so tailscaled gives up the path")
	r.p("at once instead of trusting it until 6.5 s after its last pong. The gap is therefore 1.2 s to 4.2 s plus")
	r.p("the relay's latency. Back to direct takes up to one discovery interval (5 s) of microlink's pings and")
	r.p("call-me-maybe after the cut is lifted.")
}

func secs(ms int64) string { return fmt.Sprintf("%.2f s", float64(ms)/1000) }

// tail returns the last n non-empty lines of s.
func tail(s string, n int) string {
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
