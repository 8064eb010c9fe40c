package main

import (
	"strconv"
	"strings"
)

// restart renders BenchmarkRestart (interop/bench): how soon traffic with
// a real tailscaled comes back after a node restarts with its state, for
// microlink and, as the reference, tailscaled itself.
func (r *report) restart() {
	r.p("")
	r.p("## 11. Restart with the same state")
	r.p("")
	if s, ok := r.read("restart.skip"); ok {
		r.p("Not measured in this run. %s", strings.TrimSpace(s))
		return
	}
	s, ok := r.read("restart.txt")
	if !ok {
		r.p("Not measured in this run.")
		return
	}
	runs := benchRuns(s)
	r.p("`BenchmarkRestart` of interop/bench: a node and a real tailscaled peer in the lab exchange traffic; the")
	r.p("node is stopped and started again from its state directory (same node key, new disco key, new UDP")
	r.p("port). From the moment the restarted node is up, both sides send TSMP pings to each other every")
	r.p("100 ms for 20 s. *out* is the time to the first answered ping from the restarted node, *in* to the")
	r.p("first answered ping to it, *gap* the longest time either way went unanswered after that. The same")
	r.p("is measured with tailscaled as the restarted node. Means over the restarts of each run.")
	r.p("")
	r.p("| restarted node | restarts | out | in | gap |")
	r.p("|---|---:|---:|---:|---:|")
	found := false
	for _, impl := range []string{"microlink", "tailscaled"} {
		m := runs["BenchmarkRestart/impl="+impl]
		if m == nil {
			continue
		}
		found = true
		ms := func(k string) string {
			if len(m[k]) == 0 {
				return "–"
			}
			return unit("%.0f ms", 1)(median(m[k]))
		}
		r.p("| %s | %s | %s | %s | %s |", impl, runsCount(s, "BenchmarkRestart/impl="+impl), ms("out-ms"), ms("in-ms"), ms("gap-ms"))
	}
	if !found {
		r.p("")
		r.p("The benchmark produced no figures:")
		r.p("")
		r.p("```")
		r.p("%s", tail(s, 15))
		r.p("```")
		return
	}
	r.p("")
	r.p("Goal: traffic resumes both ways as soon as when tailscaled is the restarted node.")
}

// runsCount returns the iteration count go test printed for the benchmark
// name, or "–". Log lines may split the result line after the name.
func runsCount(text, name string) string {
	pending := false
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if f[0] == name || strings.HasPrefix(f[0], name+"-") {
			if len(f) >= 2 && isCount(f[1]) {
				return f[1]
			}
			pending = true
			continue
		}
		if pending && isCount(f[0]) {
			return f[0]
		}
	}
	return "–"
}

func isCount(s string) bool {
	_, err := strconv.Atoi(s)
	return err == nil
}
