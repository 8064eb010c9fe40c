package main

import "strings"

// soak renders the last long soak run, which bench.sh does not run (it
// takes an hour or more) but copies from docs/soak.md, the report that
// scripts/soak.sh wrote, with its headings one level down.
func (r *report) soak() {
	r.p("")
	r.p("## 10. Soak: an hour and more of probes and faults")
	r.p("")
	r.p("`scripts/soak.sh DURATION` (interop/cmd/soak, not run by this script) puts a microlink node and a real")
	r.p("tailscaled (TUN mode) on two hosts of a namespace internet, with the lab's control, STUN and a DERP")
	r.p("server of the soak's own. Every 10 s tailscaled's host pings microlink's tailnet address (the OS ping)")
	r.p("and sends a UDP datagram to an echo on the node; every 5 minutes comes a fault, in turn: control restart")
	r.p("(every connection dropped), DERP restart (down 5 s, its state lost), path cut (UDP between the hosts")
	r.p("dropped for 60 s) and address change (microlink's host renumbered, nobody tells the node). After each")
	r.p("fault the soak probes every second until traffic flows (*traffic back after*, an outage whose probes do")
	r.p("not count against the 99.5%% goal) and measures the fault's own recovery. Each minute it reads the")
	r.p("node's goroutines and live heap (from the node, after a collection) and its RSS and open files (from")
	r.p("/proc). *Flat* means a least-squares line through the last half's samples rises by no more than the")
	r.p("stated limit.")
	r.p("")
	s, ok := r.read("soak.md")
	if !ok {
		r.p("No soak report (docs/soak.md) was found. Run `scripts/soak.sh 1h` and copy its report there.")
		return
	}
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		if strings.HasPrefix(line, "#") {
			line = "#" + line
		}
		r.p("%s", line)
	}
}
