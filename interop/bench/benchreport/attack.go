package main

import (
	"encoding/json"
	"fmt"
	"strings"
)

// attackRun is one line of attack.jsonl, written by interop/attacktest's
// TestUnderAttack for each attack.
type attackRun struct {
	Attack           string  `json:"attack"`
	Attacker         string  `json:"attacker"`
	Seconds          float64 `json:"seconds"`
	Pings            int     `json:"pings"`
	Answered         int     `json:"answered"`
	Duplicates       int     `json:"duplicates"`
	AllowedLoss      float64 `json:"allowedLoss"`
	MedianMs         float64 `json:"medianMs"`
	MaxMs            float64 `json:"maxMs"`
	MaxMedianMs      float64 `json:"maxMedianMs"`
	GoroutinesBefore int     `json:"goroutinesBefore"`
	GoroutinesPeak   int     `json:"goroutinesPeak"`
	MaxGoroutines    int     `json:"maxExtraGoroutines"`
	HeapPeak         int64   `json:"heapPeak"`
	HeapAfterGC      int64   `json:"heapAfterGC"`
	MaxHeap          int64   `json:"maxHeap"`
	FDsBefore        int     `json:"fdsBefore"`
	FDsPeak          int     `json:"fdsPeak"`
	MaxExtraFDs      int     `json:"maxExtraFDs"`
	LogBytes         int64   `json:"logBytes"`
	Passed           bool    `json:"passed"`
}

func (r *report) attack() {
	r.p("")
	r.p("## 7. Under attack")
	r.p("")
	if s, ok := r.read("attack.skip"); ok {
		r.p("Not measured in this run. %s", strings.TrimSpace(s))
		return
	}
	s, ok := r.read("attack.jsonl")
	var runs []attackRun
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		var a attackRun
		if err := json.Unmarshal([]byte(line), &a); err == nil {
			runs = append(runs, a)
		}
	}
	if !ok || len(runs) == 0 {
		r.p("Not measured in this run.")
		if t, ok := r.read("attack.txt"); ok {
			r.p("")
			r.p("```")
			r.p("%s", tail(t, 15))
			r.p("```")
		}
		return
	}
	first := runs[0]
	r.p("`TestUnderAttack` of interop/attacktest: a hostile node registered in the lab (built from microlink's")
	r.p("control, DERP, disco and WireGuard packages; its home is a second DERP region whose relay misbehaves on")
	r.p("demand) attacks a microlink node, which runs as a process of its own built without the race detector,")
	r.p("for %.0f s per attack, while a real tailscaled in TUN mode pings it every 100 ms with the kernel's ping.", first.Seconds)
	r.p("Before each attack the victim is measured after a garbage collection; during it, every 100 ms. Bounds")
	r.p("asserted for every attack: the real peer's pings answered but for %.0f%% (%.0f%% under the flood at line", first.AllowedLoss*100, maxLoss(runs)*100)
	r.p("rate, where the kernel drops every sender's datagrams alike once the socket's buffer is full), median")
	r.p("round trip at most %.0f ms, none answered twice; at most %d more goroutines and %d more open files than", first.MaxMedianMs, first.MaxGoroutines, first.MaxExtraFDs)
	r.p("before; heap (garbage included) at most %s. Each attack also checks that nothing reaches the loopback and", mib(first.MaxHeap))
	r.p("DERP-placeholder addresses it names, and what the attack itself must not cause (see the test).")
	r.p("")
	r.p("| attack | attacker | pings answered | median / max RTT | goroutines | heap peak (after GC) | open files | log | bounds met |")
	r.p("|---|---|---:|---:|---:|---:|---:|---:|---|")
	for _, a := range runs {
		r.p("| %s | %s | %d of %d%s | %.2f / %.1f ms | %d → %d | %s (%s) | %d → %d | %d B | %s |",
			a.Attack, a.Attacker, a.Answered, a.Pings, dupNote(a.Duplicates), a.MedianMs, a.MaxMs,
			a.GoroutinesBefore, a.GoroutinesPeak, mib(a.HeapPeak), mib(a.HeapAfterGC),
			a.FDsBefore, a.FDsPeak, a.LogBytes, yesNo(a.Passed))
	}
}

func maxLoss(runs []attackRun) float64 {
	m := 0.0
	for _, a := range runs {
		m = max(m, a.AllowedLoss)
	}
	return m
}

func dupNote(n int) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf(", %d twice", n)
}
