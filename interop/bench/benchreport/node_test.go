package main

import "testing"

func TestSkipReason(t *testing.T) {
	out := "BenchmarkNodeIdle\nBenchmarkNodeTraffic\n    traffic_test.go:135: not measured: needs root\n--- SKIP: BenchmarkNodeTraffic\nPASS\n"
	if got, want := skipReason(out, "BenchmarkNodeTraffic"), "not measured: needs root"; got != want {
		t.Errorf("skipReason = %q, want %q", got, want)
	}
	if got := skipReason(out, "BenchmarkNodeIdle"); got != "" {
		t.Errorf("skipReason of a benchmark that ran = %q, want empty", got)
	}
}
