package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// tcpLine is one line of tcp_impaired.jsonl, written by TestTCPImpaired.
type tcpLine struct {
	Kind, Profile, Impl string
	Run                 int
	Push                bool
	Size                int64
	Seconds, MBps       float64
	Direct              int64
	Err                 string
	IdleRSS, PeakRSS    int64

	// Where the packets went, and what the node and the far peer saw.
	Lost, QueueDrops, AckLost, RcvbufErrs int64
	AckPackets                            int64
	CPU                                   float64
	PeerRTTms                             float64

	// kind "setup"
	KernelCC   string `json:"kernel_cc"`
	Runs       int
	Quick      bool
	PairedLoss bool `json:"paired_loss"`

	// kind "idle_conns"
	Conns      int
	RSSBefore  float64 `json:"rss_before"`
	RSSAfter   float64 `json:"rss_after"`
	HeapBefore float64 `json:"heap_before"`
	HeapAfter  float64 `json:"heap_after"`
	IdleErr    string  `json:"err"`
}

var tcpImpls = []string{"kernel", "gvisor", "microlink"}

func (r *report) tcp() {
	r.p("")
	r.p("## 9. TCP on impaired paths")
	r.p("")
	if s, ok := r.read("tcp.skip"); ok {
		r.p("Not measured in this run. %s", strings.TrimSpace(s))
		return
	}
	s, ok := r.read("tcp_impaired.jsonl")
	if !ok {
		r.p("Not measured in this run.")
		if t, ok := r.read("tcp.txt"); ok {
			r.p("")
			r.p("```")
			r.p("%s", tail(t, 15))
			r.p("```")
		}
		return
	}
	var runs, idle []tcpLine
	var setup tcpLine
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		var l tcpLine
		if json.Unmarshal([]byte(line), &l) != nil {
			continue
		}
		switch {
		case l.Kind == "transfer":
			runs = append(runs, l)
		case l.Kind == "idle_conns":
			idle = append(idle, l)
		case l.Kind == "setup":
			setup = l
		}
	}
	if len(runs) == 0 {
		r.p("Not measured in this run: tcp_impaired.jsonl holds no transfers.")
		return
	}
	r.p("`TestTCPImpaired` of interop/bench. The far peer is a real tailscaled in TUN mode, its traffic the kernel's TCP")
	r.p("(%s, set on its sockets: this machine's default, BBR, does not slow down for random loss, and most Linux", orDash(setup.KernelCC))
	r.p("systems use CUBIC), in a network namespace behind the userspace link emulator of")
	r.p("interop/linkemu: an AF_PACKET bridge between two veths that delays each packet, loses packets at random")
	r.p("(Bernoulli) or in bursts (Gilbert-Elliott: 1%% on average, bursts of 10 packets on average), with a queue of")
	r.p("10000 packets; tailscaled's GSO super-packets are cut into datagrams first. The node under test sits next to")
	r.p("the lab's servers: the kernel (a second tailscaled in TUN mode), gVisor (tailscale.com's tsnet, in a process")
	r.p("of its own) or microlink (its default configuration, in a process of its own). Each transfer goes one way,")
	r.p("the far peer pushing to the node (*peer → node*) or getting from it (*node → peer*), and its bytes are checked.")
	var sizes []string
	for _, l := range runs {
		if s := fmt.Sprintf("%d MiB (%s)", l.Size>>20, l.Profile); !slices.Contains(sizes, s) {
			sizes = append(sizes, s)
		}
	}
	r.p("Sizes: %s. Figures are MB/s, the median of", strings.Join(sizes, ", "))
	r.p("%s with the range in brackets; *direct* says whether every run crossed the direct path (the emulator", count(max(setup.Runs, 1), "run"))
	r.p("counted the data's size in UDP outside STUN), and names the nodes with a run that did not; *peak RSS* is microlink's high-water mark during the transfer")
	r.p("over its resident set just before (after a collection), median and largest.")
	if setup.PairedLoss {
		r.p("Before each transfer the emulator's loss restarts from a seed of the run, path and direction: the three")
		r.p("nodes of a row meet the same loss pattern (the nth packet of a direction is lost for each, until their")
		r.p("packets differ), so that a row compares the stacks rather than their luck, and a rerun meets the same losses.")
	}
	if before, after := r.meta("TCP_LOAD_BEFORE"), r.meta("TCP_LOAD_AFTER"); after != "" {
		r.p("")
		r.p("Load average before and after these runs: %s; %s (on %s cores).", orDash(before), after, orDash(r.meta("NPROC")))
	}
	if setup.Quick {
		r.p("")
		r.p("**Quick mode:** one small run on one path; these figures show the suite runs, not what TCP does.")
	}
	r.p("")
	r.p("| path | direction | kernel | gVisor | microlink | microlink ≥ gVisor | direct | microlink peak RSS over idle |")
	r.p("|---|---|---:|---:|---:|---|---|---:|")
	var profiles []string
	for _, l := range runs {
		if !slices.Contains(profiles, l.Profile) {
			profiles = append(profiles, l.Profile)
		}
	}
	type key struct {
		profile, impl string
		push          bool
	}
	by := map[key][]tcpLine{}
	for _, l := range runs {
		k := key{l.Profile, l.Impl, l.Push}
		by[k] = append(by[k], l)
	}
	var misses []string
	for _, prof := range profiles {
		for _, push := range []bool{true, false} {
			dir := "node → peer"
			if push {
				dir = "peer → node"
			}
			cells := map[string]string{}
			medians := map[string]float64{}
			var left []string // the nodes with a run that did not stay direct
			for _, impl := range tcpImpls {
				ls := by[key{prof, impl, push}]
				cells[impl], medians[impl] = mbCell(ls)
				for _, l := range ls {
					if (l.Err != "" || l.Direct < l.Size) && !slices.Contains(left, impl) {
						left = append(left, impl)
					}
				}
			}
			direct := "yes"
			if len(left) > 0 {
				direct = "**no**: " + strings.Join(left, ", ")
			}
			ml := by[key{prof, "microlink", push}]
			goal := medians["microlink"] >= medians["gvisor"] && medians["microlink"] > 0
			if !goal {
				misses = append(misses, fmt.Sprintf("%s, %s: microlink %.3f MB/s, gVisor %.3f", prof, dir, medians["microlink"], medians["gvisor"]))
			}
			r.p("| %s | %s | %s | %s | %s | %s | %s | %s |", prof, dir, cells["kernel"], cells["gvisor"], cells["microlink"],
				yesNo(goal), direct, rssCell(ml))
		}
	}
	for _, l := range runs {
		if l.Err != "" {
			r.p("")
			r.p("Run %d, %s, %s, %s: %s.", l.Run, l.Profile, l.Impl, dirName(l.Push), l.Err)
		}
	}
	if slices.ContainsFunc(runs, func(l tcpLine) bool { return l.CPU > 0 }) {
		r.p("")
		r.p("Where the packets and the time went, medians of the runs: the packets the emulator lost in the data's")
		r.p("direction and the ACKs', and the ACKs that crossed (the datagrams against the data's direction), per transfer,")
		r.p("for kernel / gVisor / microlink; the datagrams dropped at the")
		r.p("emulator's queue and by full UDP socket buffers (UdpRcvbufErrors of both namespaces) in all runs; the CPU")
		r.p("time of the node's process per transfer; the far peer's smoothed round trip at the end of the transfer")
		r.p("(TCP_INFO), which grows when packets queue on the way, as in a node's socket buffer.")
		r.p("")
		r.p("| path | direction | lost, data + ACKs | ACKs | queue / socket drops | CPU s, gVisor / microlink | far peer's RTT ms, kernel / gVisor / microlink |")
		r.p("|---|---|---|---|---:|---:|---:|")
		for _, prof := range profiles {
			for _, push := range []bool{true, false} {
				var lost, acks, rtt []string
				var qd, sd int64
				for _, impl := range tcpImpls {
					ls := by[key{prof, impl, push}]
					if ls := nonFailed(ls); len(ls) > 0 {
						lost = append(lost, fmt.Sprintf("%s+%s", medianOf(ls, func(l tcpLine) float64 { return float64(l.Lost) }, "%.0f"),
							medianOf(ls, func(l tcpLine) float64 { return float64(l.AckLost) }, "%.0f")))
					} else {
						lost = append(lost, "–")
					}
					acks = append(acks, medianOf(ls, func(l tcpLine) float64 { return float64(l.AckPackets) }, "%.0f"))
					rtt = append(rtt, medianOf(ls, func(l tcpLine) float64 { return l.PeerRTTms }, "%.0f"))
					for _, l := range ls {
						qd += l.QueueDrops
						sd += l.RcvbufErrs
					}
				}
				cpu := func(impl string) string {
					return medianOf(by[key{prof, impl, push}], func(l tcpLine) float64 { return l.CPU }, "%.2f")
				}
				r.p("| %s | %s | %s | %s | %d / %d | %s / %s | %s |", prof, dirName(push), strings.Join(lost, " / "), strings.Join(acks, " / "), qd, sd,
					cpu("gvisor"), cpu("microlink"), strings.Join(rtt, " / "))
			}
		}
	}
	r.p("")
	r.p("Goals (default configuration): microlink at least gVisor's median in every row: %s.", yesNo(len(misses) == 0))
	for _, m := range misses {
		r.p("Missed: %s.", m)
	}
	if ml := by[key{profiles[0], "microlink", false}]; len(ml) > 0 && strings.HasPrefix(profiles[0], "clean 50") && !setup.Quick {
		_, get := mbCell(ml)
		_, put := mbCell(by[key{profiles[0], "microlink", true}])
		r.p("At least 30 MB/s on the clean 50 ms path: node → peer %.1f, peer → node %.1f: %s.", get, put, yesNo(get >= 30 && put >= 30))
		var worst int64
		for _, l := range append(ml, by[key{profiles[0], "microlink", true}]...) {
			worst = max(worst, l.PeakRSS-l.IdleRSS)
		}
		r.p("Peak RSS of a 32 MiB transfer at 50 ms at most idle + 8 MiB: largest %s: %s.", mib(worst), yesNo(worst <= 8<<20))
	}
	for _, prof := range profiles {
		if !strings.Contains(prof, "bursty") {
			continue
		}
		stayed, n := true, 0
		for _, push := range []bool{true, false} {
			for _, l := range by[key{prof, "microlink", push}] {
				n++
				stayed = stayed && l.Err == "" && l.Direct >= l.Size
			}
		}
		r.p("Bursty loss: microlink's transfers stayed on the direct path (%s): %s.", count(n, "run"), yesNo(stayed && n > 0))
	}
	if !setup.Quick {
		r.p("")
		r.p("Why these figures: on the clean paths slow start takes a good part of a 32 MiB transfer (about 9 round")
		r.p("trips, 0.45 s at 50 ms, to open a 4 MiB window), and on this 2-core machine the emulator, two WireGuard")
		r.p("peers and the transfer share the CPU, so all three stacks end near the same rate and the load moves it. With 1%% random")
		r.p("loss each way the rate is the loss's (about MSS/RTT × 1.22/√p, 0.3 MB/s at 50 ms), and in the peer → node")
		r.p("direction the sender is the far peer's kernel for all three nodes, so that row compares only the nodes'")
		r.p("ACKs; the same stack with the same seed, run again, has taken up to 15%% longer. With bursty loss a run is fast or slow by where the bursts")
		r.p("fall (in slow start or later), which is why the losses are paired. The node's CPU time is higher for")
		r.p("microlink when it sends on a lossy path: at such low rates a sender wakes for each chunk pacing releases")
		r.p("(four segments) and for each ACK.")
	}
	if len(idle) > 0 {
		r.p("")
		r.p("Idle connections: the far peer opens 64 connections to the node, exchanges a byte on each and leaves them")
		r.p("idle for 3 s; the node's process reports its resident set and Go heap in use, each after a collection,")
		r.p("before and after. Goal: 64 idle microlink connections cost at most 64 × 16 KiB.")
		r.p("")
		var idleVerdict string
		defer func() {
			if idleVerdict != "" {
				r.p("")
				r.p("%s", idleVerdict)
			}
		}()
		r.p("| node | RSS before | RSS after | per connection | heap before | heap after | per connection |")
		r.p("|---|---:|---:|---:|---:|---:|---:|")
		for _, l := range idle {
			if l.IdleErr != "" && l.Conns == 0 {
				r.p("| %s | %s | | | | | |", l.Impl, l.IdleErr)
				continue
			}
			n := float64(max(l.Conns, 1))
			if l.Impl == "microlink" {
				idleVerdict = fmt.Sprintf("64 idle microlink connections cost at most 64 × 16 KiB: %.1f KiB each in RSS, %.1f KiB in heap: %s.",
					(l.RSSAfter-l.RSSBefore)/n/1024, (l.HeapAfter-l.HeapBefore)/n/1024,
					yesNo(l.RSSAfter-l.RSSBefore <= 64*16<<10 && l.HeapAfter-l.HeapBefore <= 64*16<<10))
			}
			r.p("| %s | %s | %s | %.1f KiB | %s | %s | %.1f KiB |", l.Impl, mib(int64(l.RSSBefore)), mib(int64(l.RSSAfter)),
				(l.RSSAfter-l.RSSBefore)/n/1024, mib(int64(l.HeapBefore)), mib(int64(l.HeapAfter)), (l.HeapAfter-l.HeapBefore)/n/1024)
		}
	}
}

func count(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

func dirName(push bool) string {
	if push {
		return "peer → node"
	}
	return "node → peer"
}

// mbCell returns "median [min–max]" of the runs' MB/s, and the median.
func mbCell(ls []tcpLine) (string, float64) {
	var v []float64
	failed := 0
	for _, l := range ls {
		if l.Err != "" {
			failed++
			continue
		}
		v = append(v, l.MBps)
	}
	if len(v) == 0 {
		if failed > 0 {
			return "failed", 0
		}
		return "–", 0
	}
	slices.Sort(v)
	m := v[len(v)/2]
	cell := fmt.Sprintf("%.2f", m)
	if len(v) > 1 {
		cell += fmt.Sprintf(" [%.2f–%.2f]", v[0], v[len(v)-1])
	}
	if failed > 0 {
		cell += fmt.Sprintf(", %d failed", failed)
	}
	return cell, m
}

func nonFailed(ls []tcpLine) []tcpLine {
	return slices.DeleteFunc(slices.Clone(ls), func(l tcpLine) bool { return l.Err != "" })
}

// medianOf formats the median of f over the runs that did not fail, or
// a dash.
func medianOf(ls []tcpLine, f func(tcpLine) float64, format string) string {
	var v []float64
	for _, l := range ls {
		if l.Err == "" {
			v = append(v, f(l))
		}
	}
	if len(v) == 0 {
		return "–"
	}
	slices.Sort(v)
	return fmt.Sprintf(format, v[len(v)/2])
}

// rssCell returns the median and largest peak RSS over idle of the runs.
func rssCell(ls []tcpLine) string {
	var v []int64
	for _, l := range ls {
		if l.PeakRSS > 0 {
			v = append(v, l.PeakRSS-l.IdleRSS)
		}
	}
	if len(v) == 0 {
		return "–"
	}
	slices.Sort(v)
	return fmt.Sprintf("%s (max %s)", mib(v[len(v)/2]), mib(v[len(v)-1]))
}
