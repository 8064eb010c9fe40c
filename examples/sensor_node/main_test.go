package main

import (
	"encoding/json"
	"testing"
	"time"
)

func TestReadings(t *testing.T) {
	start := time.Date(2025, 1, 2, 15, 0, 0, 0, time.FixedZone("X", 3600))
	s := &sensor{start: start}
	for i := 1; i <= 3; i++ {
		now := start.Add(time.Duration(i) * 1500 * time.Millisecond)
		r := s.read("sensor-1", now)
		if r.Node != "sensor-1" || r.Seq != uint64(i) || !r.Time.Equal(now) || r.Time.Location() != time.UTC {
			t.Fatalf("reading %d = %+v", i, r)
		}
		if r.UptimeS != 1.5*float64(i) {
			t.Fatalf("uptime = %v, want %v", r.UptimeS, 1.5*float64(i))
		}
		if r.TemperatureC < 17.5 || r.TemperatureC > 24.5 {
			t.Fatalf("temperature %v outside the simulated range", r.TemperatureC)
		}
	}
	b, err := json.Marshal(s.read("n", start.Add(2*time.Second)))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"node", "seq", "time", "temperature_c", "uptime_s"} {
		if _, ok := m[k]; !ok {
			t.Errorf("field %q missing from %s", k, b)
		}
	}
	if len(m) != 5 || m["time"] != "2025-01-02T14:00:02Z" || m["seq"] != 4.0 {
		t.Errorf("wire form %s", b)
	}
}
