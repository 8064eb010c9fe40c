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
	r.p("TCP costs the same in both pairs. The difference is the UDP socket: tailscaled sends up to 64 KiB of")
	r.p("WireGuard datagrams per system call (UDP GSO) and receives them the same way (UDP GRO), with 7 MB socket")
	r.p("buffers, where microlink's magicsock sends and receives one datagram per system call and keeps the kernel's")
	r.p("default buffers. Across veth pairs the kernel also does the receiving namespace's work in the sender's")
	r.p("context, once per datagram. In a profile of the a → b direction, sendto is half of microlink's time;")
	r.p("in the b → a direction the default receive buffer overflows under tailscaled's bursts (UdpRcvbufErrors;")
	r.p("run the benchmark with TUN_BENCH_DEBUG=1 to see the counters). Both are magicsock's socket, not TUN mode.")
	r.p("Idle memory: TUN mode adds the device's read and write buffers (64 KiB each) and two goroutines.")
}
