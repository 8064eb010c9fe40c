package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

const good = `{"node":"sensor-1","seq":7,"time":"2025-01-02T15:04:05.123Z","temperature_c":21.37,"uptime_s":30.004}`

func TestParseReading(t *testing.T) {
	r, err := parseReading([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	want := Reading{Node: "sensor-1", Seq: 7, Time: time.Date(2025, 1, 2, 15, 4, 5, 123e6, time.UTC), TemperatureC: 21.37, UptimeS: 30.004}
	if !r.Time.Equal(want.Time) {
		t.Fatalf("time = %v, want %v", r.Time, want.Time)
	}
	r.Time = want.Time
	if r != want {
		t.Fatalf("got %+v, want %+v", r, want)
	}
	// Unknown fields and surrounding space are fine.
	if _, err := parseReading([]byte(" " + strings.TrimSuffix(good, "}") + `,"humidity":40}` + "\n")); err != nil {
		t.Fatalf("extra field: %v", err)
	}
}

func TestParseReadingRejects(t *testing.T) {
	set := func(field string, v any) string {
		var m map[string]any
		if err := json.Unmarshal([]byte(good), &m); err != nil {
			t.Fatal(err)
		}
		if v == nil {
			delete(m, field)
		} else {
			m[field] = v
		}
		b, _ := json.Marshal(m)
		return string(b)
	}
	for _, tc := range []struct{ in, want string }{
		{"", "not a JSON"},
		{"hello", "not a JSON"},
		{"[1,2]", "not a JSON"},
		{good + good, "data after"},
		{good + "x", "data after"},
		{strings.Repeat(" ", maxDatagram) + good, "longer than"},
		{set("node", nil), `missing "node"`},
		{set("seq", nil), `missing "seq"`},
		{set("time", nil), `missing "time"`},
		{set("temperature_c", nil), `missing "temperature_c"`},
		{set("uptime_s", nil), `missing "uptime_s"`},
		{set("node", ""), "node name"},
		{set("node", "a b"), "node name"},
		{set("node", "x\ny"), "node name"},
		{set("node", strings.Repeat("a", 64)), "node name"},
		{set("node", 5), "not a JSON"},
		{set("seq", 0), "seq 0"},
		{set("seq", -1), "not a JSON"},
		{set("seq", 1.5), "not a JSON"},
		{set("time", "yesterday"), "not a JSON"},
		{set("time", "0001-01-01T00:00:00Z"), "zero time"},
		{set("temperature_c", 1000), "out of range"},
		{set("temperature_c", -100), "out of range"},
		{set("temperature_c", "warm"), "not a JSON"},
		{set("uptime_s", -1), "negative uptime"},
	} {
		_, err := parseReading([]byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseReading(%.60q) = %v, want error containing %q", tc.in, err, tc.want)
		}
	}
}

func FuzzParseReading(f *testing.F) {
	f.Add([]byte(good))
	f.Add([]byte(`{"node":"a","seq":1,"time":"2025-01-02T15:04:05Z","temperature_c":-90,"uptime_s":0}`))
	f.Add([]byte(`{"node":null}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"seq":18446744073709551615}`))
	f.Add([]byte(good + " {"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseReading(b)
		if err != nil {
			return
		}
		// What is accepted holds up and survives a round trip.
		if !validName(r.Node) || r.Seq == 0 || r.Time.IsZero() || r.TemperatureC < -90 || r.TemperatureC > 150 || r.UptimeS < 0 {
			t.Fatalf("accepted bad reading %+v from %q", r, b)
		}
		out, err := json.Marshal(map[string]any{"node": r.Node, "seq": r.Seq, "time": r.Time, "temperature_c": r.TemperatureC, "uptime_s": r.UptimeS})
		if err != nil {
			t.Fatal(err)
		}
		if len(out) > maxDatagram {
			return
		}
		r2, err := parseReading(out)
		if err != nil {
			t.Fatalf("re-encoded reading %s rejected: %v", out, err)
		}
		if r2.Node != r.Node || r2.Seq != r.Seq || !r2.Time.Equal(r.Time) || r2.TemperatureC != r.TemperatureC || r2.UptimeS != r.UptimeS {
			t.Fatalf("round trip %+v != %+v", r2, r)
		}
	})
}
