package main

import (
	"bufio"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// benchRuns returns, for each benchmark (without its -GOMAXPROCS suffix)
// and metric, the values of all its runs. A log line the benchmark printed
// while running may split a result line in two: the name, then the log
// line's text, and the figures on the next line.
func benchRuns(text string) map[string]map[string][]float64 {
	out := map[string]map[string][]float64{}
	sc := bufio.NewScanner(strings.NewReader(text))
	pending := ""
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 0 && strings.HasPrefix(f[0], "Benchmark") {
			if _, err := strconv.Atoi(orEmpty(f, 1)); err != nil {
				pending = f[0]
				continue
			}
		} else if _, err := strconv.Atoi(orEmpty(f, 0)); err == nil && pending != "" {
			f = append([]string{pending}, f...)
		}
		pending = ""
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		name := f[0]
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			if _, err := strconv.Atoi(name[i+1:]); err == nil {
				name = name[:i]
			}
		}
		if out[name] == nil {
			out[name] = map[string][]float64{}
		}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				break
			}
			out[name][f[i+1]] = append(out[name][f[i+1]], v)
		}
	}
	return out
}

func orEmpty(f []string, i int) string {
	if i < len(f) {
		return f[i]
	}
	return ""
}

// median returns the median of vs (the lower middle one for an even
// count), or 0.
func median(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}

func runsText(vs []float64) string {
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = fmt.Sprintf("%.0f", v)
	}
	return strings.Join(parts, ", ")
}

// meta returns a value of meta.env.
func (r *report) meta(key string) string {
	s, _ := r.read("meta.env")
	for _, line := range strings.Split(s, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && k == key {
			return v
		}
	}
	return ""
}

func (r *report) tun() {
	r.p("")
	r.p("## 8. TUN mode")
	r.p("")
	if s, ok := r.read("tun.skip"); ok {
		r.p("Not measured in this run. %s", strings.TrimSpace(s))
		return
	}
	text, ok := r.read("tun.txt")
	runs := benchRuns(text)
	ts := runs["BenchmarkTUNThroughput/tailscaled-tailscaled"]
	ml := runs["BenchmarkTUNThroughput/microlink-tailscaled"]
	us := runs["BenchmarkTUNIdleRSS/userspace"]
	tn := runs["BenchmarkTUNIdleRSS/tun"]
	if !ok || ts == nil || ml == nil {
		r.p("Not measured in this run.")
		if ok {
			r.p("")
			r.p("```")
			r.p("%s", tail(text, 15))
			r.p("```")
		}
		return
	}
	r.p("Measured by `BenchmarkTUNThroughput` and `BenchmarkTUNIdleRSS` in interop/tuntest. Each node runs in a network")
	r.p("namespace of its own, in TUN mode: `microlink up --tun` and a real tailscaled (`--tun`, netfilter off), joined")
	r.p("to the offline lab and talking over a direct path (veth pairs through the test's namespace). The host's")
	r.p("own TCP sockets send as fast as they can for a fixed time through both TUN devices; *a* is microlink in the")
	r.p("microlink row and another tailscaled in the reference row, *b* is always a tailscaled. Figures are the")
	r.p("median of the runs (each run listed), in MB/s of TCP payload. Both modes of microlink run the same binary")
	r.p("(built by the test, not stripped). Goal: microlink ↔ tailscaled at least as fast as tailscaled ↔ tailscaled")
	r.p("on the same machine.")
	if load := r.meta("TUN_LOAD_AFTER"); load != "" {
		r.p("")
		r.p("Load average right after these runs: %s (on %s cores).", load, orDash(r.meta("NPROC")))
	}
	r.p("")
	r.p("| direction | tailscaled ↔ tailscaled | microlink ↔ tailscaled | ratio | goal (≥ 1.0) met |")
	r.p("|---|---:|---:|---:|---|")
	for _, d := range []struct{ label, metric string }{{"a → b", "MB/s-a→b"}, {"b → a", "MB/s-b→a"}} {
		t, m := median(ts[d.metric]), median(ml[d.metric])
		ratio := "–"
		met := "–"
		if t > 0 {
			ratio = fmt.Sprintf("%.2f", m/t)
			met = yesNo(m >= t)
		}
		r.p("| %s (microlink %s) | %.0f MB/s (runs: %s) | %.0f MB/s (runs: %s) | %s | %s |", d.label,
			map[string]string{"a → b": "sends", "b → a": "receives"}[d.label],
			t, runsText(ts[d.metric]), m, runsText(ml[d.metric]), ratio, met)
	}
	if us != nil && tn != nil {
		u, v := median(us["MB-RSS"]), median(tn["MB-RSS"])
		r.p("")
		r.p("| idle RSS, one peer | userspace mode | TUN mode | difference | goal (within 1 MiB) met |")
		r.p("|---|---:|---:|---:|---|")
		diff := v - u
		r.p("| total (VmRSS) | %.1f MB | %.1f MB | %+.2f MB | %s |", u, v, diff, yesNo(diff <= 1.048576))
		r.p("| private (RssAnon) | %.1f MB | %.1f MB | %+.2f MB | |", median(us["MB-RssAnon"]), median(tn["MB-RssAnon"]),
			median(tn["MB-RssAnon"])-median(us["MB-RssAnon"]))
	}
	r.p("")
	r.p("Why these figures: both sides move TCP through their TUN devices in pieces of up to 64 KiB (segmentation")
	r.p("offload when reading the device, coalescing of consecutive segments when writing it), so the hosts' own")
	r.p("TCP costs the same in both pairs, and both move the WireGuard datagrams of such a piece through their UDP")
	r.p("socket in a few system calls, with 7 MB socket buffers. microlink's TUN reader corks magicsock for the")
	r.p("packets of one read, which then leave as UDP GSO sends (a run of equal datagrams to the peer, up to 64 KiB")
	r.p("per send) in one sendmmsg; its read loop takes up to 8 buffers per recvmmsg with UDP GRO on, so a burst")
	r.p("tailscaled sent with GSO arrives whole, and wakes the device's writer once per read. tailscaled does the")
	r.p("same (sendmmsg and recvmmsg, GSO and GRO). Across veth pairs the kernel does the receiving namespace's work")
	r.p("in the sender's context, once per datagram it handles, so fewer, larger ones save both sides' time.")
	r.p("When the host takes packets more slowly than they arrive, microlink's TUN writer queue fills and the")
	r.p("socket's read loop waits for room, so the sender's TCP slows down by its window, as with wireguard-go's")
	r.p("device. Until commit 2ffa143 the packet was dropped instead, about 7%% of a stream at full speed (85,045 of")
	r.p("1.2 million packets in one run), which the hosts' TCP took for loss on the path; the full run at dc143ff")
	r.p("measured microlink at 0.96 (sending) and 0.81 (receiving) of tailscaled ↔ tailscaled. Sealing and opening")
	r.p("(ChaCha20-Poly1305) is about 28%% of microlink's profile, on one goroutine each way where wireguard-go has a")
	r.p("worker per core; opening on worker goroutines was tried and gained nothing on 2 cores, where the whole")
	r.p("machine's CPU, not the read loop, is the limit.")
	r.p("Before this batching (commit 5af5af7: one sendto and one recvfrom per datagram, a wake of the device's")
	r.p("writer per packet), a run of this benchmark then gave microlink 79 MB/s a → b")
	r.p("(runs: 79, 68, 82) and 257 MB/s b → a (runs: 199, 257, 273) against tailscaled ↔ tailscaled's 326")
	r.p("(runs: 318, 326, 422) and 378 (runs: 359, 378, 401): 0.24 and 0.68. Other work on the machine moves single")
	r.p("runs by a third: compare the two pairs within one run.")
	r.p("Idle memory: TUN mode adds the device's read and write buffers (64 KiB each) and two goroutines.")
}
