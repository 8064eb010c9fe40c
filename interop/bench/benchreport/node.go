package main

import (
	"fmt"
	"strings"
)

// nodeRow is one line of the table of the whole node.
type nodeRow struct {
	label, bench, metric string
	format               func(float64) string
	ratio                bool
}

func unit(format string, scale float64) func(float64) string {
	return func(v float64) string { return fmt.Sprintf(format, v*scale) }
}

func (r *report) node() {
	r.p("")
	r.p("## 5. The whole node next to tailscaled")
	r.p("")
	if s, ok := r.read("node.skip"); ok {
		r.p("**Not measured yet.** %s", strings.TrimSpace(s))
		r.p("")
		r.p("Items waiting: idle RSS with 1, 100 and 1000 peers next to tailscaled; time from start to reachable;")
		r.p("idle traffic per hour; peak RSS under load; end-to-end UDP throughput between two nodes.")
		return
	}
	s, ok := r.read("node.txt")
	if !ok {
		r.p("**Not measured yet.** The node section did not run.")
		return
	}
	bs := parseBench(s)
	r.p("Measured by `BenchmarkNode*` in interop/bench against the offline lab (testcontrol, DERP and STUN from")
	r.p("tailscale.com v1.102.5); each node is a separate process (`microlink up`, or tailscaled in")
	r.p("userspace-networking mode) whose RSS is read from /proc. Peers beyond the measured pair are fake nodes added")
	r.p("to the control server.")
	r.p("")
	r.p("| measurement | microlink | tailscaled | ratio |")
	r.p("|---|---:|---:|---:|")
	mb := unit("%.1f MB", 1)
	rows := []nodeRow{}
	for _, p := range []string{"1", "100", "1000"} {
		peers := p + " peers"
		if p == "1" {
			peers = "1 peer"
		}
		b := "BenchmarkNodeIdle/peers=" + p
		rows = append(rows,
			nodeRow{"idle RSS, " + peers, b, "rss-MB", mb, true},
			nodeRow{"– private (RssAnon)", b, "anon-MB", mb, true},
			nodeRow{"– mapped files (RssFile)", b, "file-MB", mb, true},
		)
	}
	kbh := unit("%.1f KB/h", 1e-3)
	rows = append(rows,
		nodeRow{"start to reachable", "BenchmarkNodeStart", "start-ms", unit("%.1f ms", 1), true},
		nodeRow{"idle traffic sent", "BenchmarkNodeTraffic", "sent-B/h", kbh, true},
		nodeRow{"idle traffic received", "BenchmarkNodeTraffic", "recv-B/h", kbh, true},
		nodeRow{"idle traffic, both ways", "BenchmarkNodeTraffic", "B/h", kbh, true},
		nodeRow{"– control (ts2021)", "BenchmarkNodeTraffic", "control-B/h", kbh, true},
		nodeRow{"– DERP", "BenchmarkNodeTraffic", "derp-B/h", kbh, true},
		nodeRow{"– STUN", "BenchmarkNodeTraffic", "stun-B/h", kbh, true},
		nodeRow{"– direct to the peer (disco, WireGuard)", "BenchmarkNodeTraffic", "peer-B/h", kbh, true},
		nodeRow{"– other IP traffic", "BenchmarkNodeTraffic", "other-B/h", kbh, true},
		nodeRow{"idle traffic per day (extrapolated)", "BenchmarkNodeTraffic", "MB/day", unit("%.3f MB", 1), true},
		nodeRow{"end-to-end UDP throughput (received)", "BenchmarkNodeUDP", "MB/s", unit("%.1f MB/s", 1), true},
		nodeRow{"UDP datagrams lost (sender unpaced)", "BenchmarkNodeUDP", "%lost", unit("%.1f %%", 1), false},
		nodeRow{"RSS of the UDP nodes once joined (higher of the two)", "BenchmarkNodeUDP", "ready-rss-MB", mb, true},
		nodeRow{"peak RSS under UDP load (higher of the two ends)", "BenchmarkNodeUDP", "peak-rss-MB", mb, true},
	)
	trafficSkip := skipReason(s, "BenchmarkNodeTraffic")
	for _, row := range rows {
		cell := func(impl string) (string, float64, bool) {
			b, ok := bs[row.bench+"/impl="+impl]
			if !ok {
				if row.bench == "BenchmarkNodeTraffic" && trafficSkip != "" {
					return trafficSkip, 0, false
				}
				return "not measured", 0, false
			}
			v, ok := b.metrics[row.metric]
			if !ok {
				return "not measured", 0, false
			}
			return row.format(v), v, true
		}
		a, va, oka := cell("microlink")
		b, vb, okb := cell("tailscaled")
		ratio := "–"
		switch {
		case !row.ratio || !oka || !okb:
		case vb > 0:
			ratio = fmt.Sprintf("%.2f", va/vb)
		case va == 0:
			ratio = "both 0"
		}
		r.p("| %s | %s | %s | %s |", row.label, a, b, ratio)
	}
	r.nodeGoals(bs, trafficSkip)
	r.p("")
	r.p("Notes:")
	r.p("")
	r.p("- RSS is read from /proc/PID/status (VmRSS) after the node has joined, seen all its peers and sat idle;")
	r.p("  tailscaled is the lab's default build (not stripped, all features), in userspace-networking mode.")
	r.p("  VmRSS is RssAnon, the process's private memory (Go heap, stacks, runtime), plus RssFile, the pages of the")
	r.p("  binary it has touched: clean, shared with every other process running the same binary, and reclaimable by")
	r.p("  the kernel under memory pressure (they are read back from the file). A smaller binary shrinks RssFile:")
	r.p("  /proc/PID/smaps of an idle microlink shows every page of its text and nearly all of its read-only data")
	r.p("  resident, so RssFile is about the binary's size. That is the kernel's doing more than the code's: on")
	r.p("  Linux 6.18 with ext4, where this was measured, the kernel reads ahead and maps the binary in pieces")
	r.p("  much larger than the pages a process touches. A program that links crypto/tls and encoding/json and")
	r.p("  only sleeps (stripped, 4.79 MB) has an RssFile of 3.38 MB, the same with the page cache dropped before it starts; and a microlink build that at")
	r.p("  start marked its text and read-only data for random access (madvise MADV_RANDOM, which turns off")
	r.p("  readahead and fault-around) and dropped their pages (MADV_DONTNEED) still had 7.40 MB of them resident")
	r.p("  when idle (7.44–7.47 MB without). There, only a smaller binary makes RssFile smaller.")
	r.p("- *start to reachable* runs from launching the process (for tailscaled: starting tailscaled and running")
	r.p("  `tailscale up`, as the lab does) until a TSMP ping from a real tailscaled peer is answered. The harness")
	r.p("  learns that microlink is up from the line `microlink up` logs when Start returns, and that tailscaled is")
	r.p("  from `tailscale up` returning (after the lab polls every 25 ms for tailscaled's local API to answer).")
	r.p("- *idle traffic*: microlink (`microlink up`) and tailscaled (userspace networking) run at the same time in")
	r.p("  one lab, each in a network namespace of its own joined to the lab's by a veth pair, each the other's only")
	r.p("  peer. Once both have joined, seen each other and settled, the veth's byte counters")
	r.p("  (/sys/class/net/IF/statistics) are read over an idle window in which nothing is sent between the nodes;")
	r.p("  the figures count whole Ethernet frames (ARP included; IPv6 is off on the links) and are scaled to an")
	r.p("  hour and a day. They hold everything a node does on its own: control long-poll keep-alives, DERP")
	r.p("  keep-alives, STUN and disco. The rows split by kind come from nftables counters on the same link, by the")
	r.p("  lab server's port (control, DERP, STUN) or forwarding to the other node (direct); they count IP bytes,")
	r.p("  both ways together, so they add up to less than the total, which also holds Ethernet headers (14 bytes a")
	r.p("  frame, a large share of an idle node's small packets) and ARP. The window of ten minutes holds about ten")
	r.p("  of the periodic events (the lab's control keep-alive every 50–60 s, DERP's every 60 s) and few or none of")
	r.p("  the rarer ones (netcheck, endpoint and map updates), so single runs vary by some tens of percent.")
	r.p("- The lab's control and DERP servers send TCP keep-alive probes after 10 minutes of silence on a")
	r.p("  connection, as the real derper does (its -tcp-keepalive-time), and not after Go's default of 15 s:")
	r.p("  with the default, the probes and the ACKs they demand were about two thirds of an idle node's bytes,")
	r.p("  traffic of the lab rather than of the node (2.1 MB a day for microlink in a 3-minute window).")
	r.p("- What an idle microlink sends: the ACK of control's keep-alive message (every 50–60 s, 63 bytes of TCP")
	r.p("  payload), the ACK of DERP's keep-alive frame (every ~60 s, 27 bytes), and an HTTP/2 PING on the")
	r.p("  control connection after 30 s without a message from control, so that a black-holed connection is")
	r.p("  noticed within 40 s (control answers each; with their ACKs a PING costs about 230 bytes of IP both")
	r.p("  ways, and one falls between two keep-alives). The PINGs are most of the control row's difference")
	r.p("  to tailscaled, which sends none and notices a dead control connection only by a 120 s watchdog. No")
	r.p("  TCP keep-alive probes, STUN or disco while idle.")
	r.p("- Most of what an idle microlink receives is control traffic caused by its peer: whenever tailscaled")
	r.p("  reports new endpoints or network details, testcontrol sends every other node a whole new netmap (with")
	r.p("  the DERP map and packet filter), where Tailscale's control sends a small delta.")
	r.p("  microlink's received bytes follow how often tailscaled does so, which varies from run to run. Apart")
	r.p("  from the run above, four runs of BenchmarkNodeTraffic measured microlink at 0.73, 0.76, 0.79 and 0.95")
	r.p("  MB a day (control 10–20 KB/h), and two earlier full-suite runs at 1.15 and 1.23 (control 30 KB/h).")
	r.p("  In the 0.79 run a packet capture of the control port held only the keep-alives and their ACKs: no")
	r.p("  netmap at all. The order of the benchmarks is not the cause: the 0.79 and 0.95 runs both ran all the")
	r.p("  node benchmarks in the suite's order. The netmap messages microlink received in the window")
	r.p("  (Stats.MapUpdates) are in the goal's line when measured.")
	r.p("- *UDP* rows: two nodes, each a `udpload` process of interop/bench (microlink, or for the tailscaled column")
	r.p("  tsnet, the same engine tailscaled runs in userspace-networking mode, from tailscale.com v1.102.5); the")
	r.p("  sender pings its peer through WireGuard, then sends 1200-byte datagrams as fast as it can for a fixed")
	r.p("  window, and the receiver counts what arrives. Peak RSS is VmHWM of each process at the end, next to its")
	r.p("  VmRSS once joined; the microlink udpload is built without tsnet (`-tags microlinkonly`). Both nodes")
	r.p("  and the lab share the 2 cores, so the sender and receiver compete for CPU and the loss is mostly the")
	r.p("  receiver falling behind.")
	r.p("- The UDP benchmarks ping before they send (a leftover from a since-fixed 5 s delay of the first")
	r.p("  datagrams between two freshly started nodes).")
	r.p("- Each figure is one run.")
	if s, ok := r.read("node.notes"); ok && strings.TrimSpace(s) != "" {
		r.p("")
		r.p("%s", strings.TrimSpace(s))
	}
}

// nodeGoals states the goals of the whole node and whether they are met.
func (r *report) nodeGoals(bs map[string]bench, trafficSkip string) {
	r.p("")
	r.p("| goal | figure | met |")
	r.p("|---|---|---|")
	if b, ok := bs["BenchmarkNodeIdle/peers=1/impl=microlink"]; ok {
		m := b.metrics
		const mib = 1 << 20 / 1e6 // the figures are in MB
		r.p("| idle RSS with 1 peer ≤ 8 MiB (8.39 MB): total (VmRSS) | %.1f MB | %s |", m["rss-MB"], yesNo(m["rss-MB"] <= 8*mib))
		r.p("| idle RSS with 1 peer: private memory (RssAnon) ≤ 2 MiB (2.10 MB) | %.2f MB (plus %.1f MB of mapped binary) | %s |",
			m["anon-MB"], m["file-MB"], yesNo(m["anon-MB"] <= 2*mib))
	} else {
		r.p("| single-digit MB RSS, idle | not measured | – |")
	}
	var over []string
	for _, p := range []string{"100", "1000"} {
		if b, ok := bs["BenchmarkNodeIdle/peers="+p+"/impl=microlink"]; ok && b.metrics["rss-MB"] >= 10 {
			over = append(over, fmt.Sprintf("%s peers: %.1f MB total, %.1f MB private", p, b.metrics["rss-MB"], b.metrics["anon-MB"]))
		}
	}
	if len(over) > 0 {
		r.p("| (the same with more peers, for reference) | %s | – |", strings.Join(over, "; "))
	}
	ml, okML := bs["BenchmarkNodeStart/impl=microlink"]
	ts, okTS := bs["BenchmarkNodeStart/impl=tailscaled"]
	if okML && okTS && ts.metrics["start-ms"] > 0 {
		q := ml.metrics["start-ms"] / ts.metrics["start-ms"]
		r.p("| start to reachable ≤ 0.5× tailscaled in the same run | %.0f ms vs %.0f ms: %.2f× | %s |",
			ml.metrics["start-ms"], ts.metrics["start-ms"], q, yesNo(q <= 0.5))
	} else {
		r.p("| start to reachable ≤ 0.5× tailscaled | not measured | – |")
	}
	load, okLoad := bs["BenchmarkNodeUDP/impl=microlink"]
	if ready := load.metrics["ready-rss-MB"]; okLoad && ready > 0 {
		// Both figures are of the same udpload processes (built without
		// tsnet): once joined, and at their peak under load.
		ratio := load.metrics["peak-rss-MB"] / ready
		r.p("| peak RSS under load at most twice idle | %.1f MB at the peak of UDP load vs %.1f MB once joined (the same udpload processes, VmHWM and VmRSS): %.1f× | %s |",
			load.metrics["peak-rss-MB"], ready, ratio, yesNo(ratio <= 2))
	} else {
		r.p("| peak RSS under load at most twice idle | not measured | – |")
	}
	b, ok := bs["BenchmarkNodeTraffic/impl=microlink"]
	switch {
	case ok:
		m := b.metrics
		met := yesNo(m["MB/day"] < 1)
		if w := m["window-s"]; w < 60 {
			met += fmt.Sprintf(" (smoke only: a %.0f s window)", w)
		}
		maps := ""
		if n, ok := m["netmaps"]; ok {
			maps = fmt.Sprintf(", %.0f netmap message%s received in it", n, plural(n))
		}
		r.p("| idle traffic under 1 MB a day | %.3f MB/day (%.1f KB/h over a %.0f s window%s) | %s |", m["MB/day"], m["B/h"]/1e3, m["window-s"], maps, met)
	case trafficSkip != "":
		r.p("| idle traffic under 1 MB a day | %s | – |", trafficSkip)
	default:
		r.p("| idle traffic under 1 MB a day | not measured | – |")
	}
}

// skipReason returns the message of a skipped benchmark in go test -v
// -bench output (logged just before or after its "--- SKIP" line), or "".
func skipReason(out, name string) string {
	lines := strings.Split(out, "\n")
	for i, line := range lines {
		if strings.TrimSpace(line) != "--- SKIP: "+name {
			continue
		}
		for _, j := range []int{i - 1, i + 1} {
			if j < 0 || j >= len(lines) || !strings.HasPrefix(lines[j], "    ") {
				continue
			}
			msg := strings.TrimSpace(lines[j])
			if file, after, ok := strings.Cut(msg, ": "); ok && strings.Contains(file, ".go:") {
				msg = after
			}
			return msg
		}
		return "skipped"
	}
	return ""
}

// plural returns "s" unless n is 1.
func plural(n float64) string {
	if n == 1 {
		return ""
	}
	return "s"
}
