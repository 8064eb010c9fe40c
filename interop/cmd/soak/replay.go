package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"time"
)

// replay rebuilds a run's report from the file its -samples flag wrote,
// for a report in the present format of an earlier run. o gives the
// run's settings (-duration and the intervals).
func replay(path string, o options) (*report, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	rep := &report{opts: o}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	var first time.Time
	for sc.Scan() {
		var rec struct {
			Kind string
			V    json.RawMessage
		}
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		switch rec.Kind {
		case "probe":
			var p probeResult
			if err := json.Unmarshal(rec.V, &p); err != nil {
				return nil, err
			}
			rep.probes = append(rep.probes, p)
			if first.IsZero() {
				first = p.Start.Add(-o.ProbeEvery)
			}
		case "sample":
			var s sample
			if err := json.Unmarshal(rec.V, &s); err != nil {
				return nil, err
			}
			rep.samples = append(rep.samples, s)
		case "fault":
			var ft fault
			if err := json.Unmarshal(rec.V, &ft); err != nil {
				return nil, err
			}
			rep.faults = append(rep.faults, ft)
			rep.start = ft.Start.Add(-ft.At)
		case "start":
			if err := json.Unmarshal(rec.V, &rep.start); err != nil {
				return nil, err
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if rep.start.IsZero() {
		rep.start = first
	}
	rep.end = rep.start.Add(o.Duration)
	return rep, nil
}
