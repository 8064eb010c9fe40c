package main

import (
	"fmt"
	"math"
	"strings"
	"sync"
	"time"
)

// Goals of the soak.
const (
	availabilityGoal = 99.5 // % of probes answered outside outages
)

// report gathers a run's probes, samples and faults.
type report struct {
	opts       options
	start, end time.Time

	mu       sync.Mutex
	probes   []probeResult
	samples  []sample
	faults   []fault
	sampled  int // probes counted into samples so far
	notClean []string
}

func (r *report) addProbe(p probeResult) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.probes = append(r.probes, p)
}

func (r *report) addSample(s sample) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.samples = append(r.samples, s)
}

func (r *report) addFault(f fault) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.faults = append(r.faults, f)
}

// probesSinceLastSample counts the probes (answered, all) since the
// previous call.
func (r *report) probesSinceLastSample() (ok, total int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.probes[r.sampled:] {
		total++
		if p.ok() {
			ok++
		}
	}
	r.sampled = len(r.probes)
	return ok, total
}

// inOutage reports whether probe p overlaps a fault's outage: from the
// fault until traffic flowed again (two minutes if it never did).
func (r *report) inOutage(p probeResult) bool {
	for _, f := range r.faults {
		d := f.Outage
		if d < 0 {
			d = 2 * time.Minute
		}
		if p.End.After(f.Start) && p.Start.Before(f.Start.Add(d)) {
			return true
		}
	}
	return false
}

// availability returns the probes outside outages, how many of them were
// answered, and the percentage.
func (r *report) availability() (outside, answered int, pct float64) {
	for _, p := range r.probes {
		if r.inOutage(p) {
			continue
		}
		outside++
		if p.ok() {
			answered++
		}
	}
	if outside == 0 {
		return 0, 0, 0
	}
	return outside, answered, 100 * float64(answered) / float64(outside)
}

// trend describes one measure over the run.
type trend struct {
	Name                string
	Unit                string
	FirstMean, LastMean float64
	LastMin, LastMax    float64
	FirstMax            float64
	// Rise is the change over the last half that a least-squares line
	// through its samples predicts.
	Rise  float64
	Limit float64 // the largest rise that still counts as flat
	Flat  bool
}

func (r *report) trends() []trend {
	if len(r.samples) < 4 {
		return nil
	}
	half := r.end.Sub(r.start) / 2
	measure := func(name, unit string, v func(sample) float64, limit func(mean float64) float64) trend {
		t := trend{Name: name, Unit: unit, LastMin: math.Inf(1), LastMax: math.Inf(-1), FirstMax: math.Inf(-1)}
		var xs, ys []float64
		var firstSum float64
		var firstN int
		for i, s := range r.samples {
			y := v(s)
			if s.At < half {
				if i > 0 { // the first minute is warm-up
					firstSum += y
					firstN++
					t.FirstMax = max(t.FirstMax, y)
				}
				continue
			}
			xs = append(xs, s.At.Hours())
			ys = append(ys, y)
			t.LastMin, t.LastMax = min(t.LastMin, y), max(t.LastMax, y)
		}
		if firstN > 0 {
			t.FirstMean = firstSum / float64(firstN)
		}
		var sum float64
		for _, y := range ys {
			sum += y
		}
		if len(ys) > 0 {
			t.LastMean = sum / float64(len(ys))
		}
		if len(xs) >= 2 {
			t.Rise = slope(xs, ys) * (xs[len(xs)-1] - xs[0])
		}
		t.Limit = limit(t.LastMean)
		// Without two samples in each half there is no trend to judge.
		t.Flat = len(ys) >= 2 && firstN >= 1 && t.Rise <= t.Limit
		return t
	}
	return []trend{
		measure("RSS", "MiB", func(s sample) float64 { return mib(s.RSS) }, func(m float64) float64 { return max(0.05*m, 0.5) }),
		measure("live heap", "MiB", func(s sample) float64 { return mib(s.HeapInuse) }, func(m float64) float64 { return max(0.05*m, 0.25) }),
		measure("goroutines", "", func(s sample) float64 { return float64(s.Goroutines) }, func(float64) float64 { return 2 }),
		measure("open FDs", "", func(s sample) float64 { return float64(s.FDs) }, func(float64) float64 { return 0.5 }),
	}
}

// slope is the least-squares slope of ys over xs.
func slope(xs, ys []float64) float64 {
	n := float64(len(xs))
	var sx, sy, sxx, sxy float64
	for i := range xs {
		sx += xs[i]
		sy += ys[i]
		sxx += xs[i] * xs[i]
		sxy += xs[i] * ys[i]
	}
	d := n*sxx - sx*sx
	if d == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / d
}

// fdsGrew reports whether the open files of the last half ever exceeded
// the most of the first half.
func (r *report) fdsGrew() bool {
	for _, t := range r.trends() {
		if t.Name == "open FDs" {
			return t.LastMax > t.FirstMax || !t.Flat
		}
	}
	return false
}

func (r *report) goalsMet() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, t := range r.trends() {
		if !t.Flat {
			return false
		}
	}
	if r.fdsGrew() {
		return false
	}
	if _, _, pct := r.availability(); pct < availabilityGoal {
		return false
	}
	for _, f := range r.faults {
		if f.Recovery < 0 || f.Outage < 0 || f.RegisterRequests > 0 || f.Err != "" {
			return false
		}
	}
	return len(r.faults) > 0
}

func yes(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}

func (r *report) markdown() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	dur := r.end.Sub(r.start).Round(time.Second)
	label := ""
	if r.opts.Label != "" {
		label = " of " + r.opts.Label
	}
	fmt.Fprintf(&b, "## Soak%s: %v, %d faults (%s)\n\n", label, dur, len(r.faults), r.start.UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&b, "Probes every %v (OS ping and UDP echo from tailscaled's host to microlink), a fault every %v, a sample every %v.\n\n",
		r.opts.ProbeEvery, r.opts.FaultEvery, r.opts.SampleEvery)

	outside, answered, pct := r.availability()
	fmt.Fprintf(&b, "### Goals\n\n| goal | measured | met |\n|---|---|---|\n")
	for _, t := range r.trends() {
		fmt.Fprintf(&b, "| %s flat over the last half (rise ≤ %.2f%s) | %.2f → %.2f %s (mean of first half → last half), fitted rise %+.2f | %s |\n",
			t.Name, t.Limit, unitSuffix(t.Unit), t.FirstMean, t.LastMean, t.Unit, t.Rise, yes(t.Flat))
	}
	fmt.Fprintf(&b, "| no FD growth (last half never above the first half's most) | first half max %.0f, last half max %.0f | %s |\n",
		maxFDs(r, true), maxFDs(r, false), yes(!r.fdsGrew()))
	fmt.Fprintf(&b, "| ≥ %.1f%% of probes answered outside outages | %d of %d, %.2f%% (%d probes in outages) | %s |\n",
		availabilityGoal, answered, outside, pct, len(r.probes)-outside, yes(pct >= availabilityGoal))
	recovered := true
	var regs uint64
	for _, f := range r.faults {
		recovered = recovered && f.Recovery >= 0 && f.Outage >= 0 && f.Err == ""
		regs += f.RegisterRequests
	}
	fmt.Fprintf(&b, "| every fault recovered | %d faults | %s |\n", len(r.faults), yes(recovered && len(r.faults) > 0))
	fmt.Fprintf(&b, "| no register request caused by a fault | %d | %s |\n\n", regs, yes(regs == 0))

	fmt.Fprintf(&b, "### Faults\n\n| # | at | fault | traffic back after | recovery | register requests |\n|---|---|---|---|---|---|\n")
	for i, f := range r.faults {
		rec := "not within 2 min"
		if f.Recovery >= 0 {
			rec = f.Recovery.Round(10 * time.Millisecond).String()
		}
		out := "not within the limit"
		if f.Outage >= 0 {
			out = f.Outage.Round(10 * time.Millisecond).String()
		}
		what := f.What
		if f.Err != "" {
			what += " (error: " + f.Err + ")"
		}
		fmt.Fprintf(&b, "| %d | %s | %s | %s | %s: %s | %d |\n", i+1, f.At.Round(time.Second), f.Kind, out, what, rec, f.RegisterRequests)
	}

	every := 1
	if len(r.samples) > 30 {
		every = 5
	}
	fmt.Fprintf(&b, "\n### Samples\n\n")
	if every > 1 {
		fmt.Fprintf(&b, "Every %dth of the %d samples, and the last; *probes answered* counts the probes since the sample before.\n\n", every, len(r.samples))
	}
	fmt.Fprintf(&b, "| at | goroutines | live heap MiB | RSS MiB | open FDs | state | probes answered |\n|---|---|---|---|---|---|---|\n")
	for i, s := range r.samples {
		if i%every != 0 && i != len(r.samples)-1 {
			continue
		}
		fmt.Fprintf(&b, "| %s | %d | %.2f | %.2f | %d | %s | %d/%d |\n",
			s.At.Round(time.Second), s.Goroutines, mib(s.HeapInuse), mib(s.RSS), s.FDs, s.State, s.ProbesOK, s.Probes)
	}
	return b.String()
}

func unitSuffix(u string) string {
	if u == "" {
		return ""
	}
	return " " + u
}

func maxFDs(r *report, first bool) float64 {
	for _, t := range r.trends() {
		if t.Name == "open FDs" {
			if first {
				return t.FirstMax
			}
			return t.LastMax
		}
	}
	return 0
}
