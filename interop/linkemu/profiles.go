package linkemu

import "time"

// Profile is a named impairment of both directions of a path.
type Profile struct {
	Name    string
	Out, In Impairment
}

// Profiles are the internet-like paths of the TCP tests and benchmarks:
// a 50 ms round trip, clean, with 1% random loss each way, or with bursty
// loss (1% on average, in bursts of 10 packets on average), and a clean
// 200 ms round trip.
var Profiles = []Profile{
	{"clean 50 ms", Impairment{Delay: 25 * time.Millisecond}, Impairment{Delay: 25 * time.Millisecond}},
	{"50 ms, 1% loss", Impairment{Delay: 25 * time.Millisecond, Loss: 0.01}, Impairment{Delay: 25 * time.Millisecond, Loss: 0.01}},
	{"50 ms, bursty loss", bursty, bursty},
	{"clean 200 ms", Impairment{Delay: 100 * time.Millisecond}, Impairment{Delay: 100 * time.Millisecond}},
}

var bursty = Impairment{Delay: 25 * time.Millisecond, BurstEnter: 0.1 / 99, BurstLeave: 0.1}
