//go:build race

package disco

// raceEnabled: the race detector makes sync.Pool drop items at random.
const raceEnabled = true
