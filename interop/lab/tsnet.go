package lab

import (
	"context"
	"os"
	"sync"

	"tailscale.com/envknob"
	"tailscale.com/logtail"
	"tailscale.com/tsnet"
)

var tsnetEnvOnce sync.Once

// StartTSNet starts an in-process tsnet peer with the given hostname,
// joins it to the lab and waits until it is Running. It is closed by
// t.Cleanup, or earlier by calling Close, which makes it leave.
func StartTSNet(t T, l *Lab, hostname string) *tsnet.Server {
	t.Helper()
	tsnetEnvOnce.Do(func() {
		// Outside tests, tsnet uploads its logs to log.tailscale.com;
		// nothing of the lab may leave the machine.
		logtail.Disable()
		// Knobs that a tailscaled gets in its environment, set here for
		// the in-process client.
		for _, kv := range [][2]string{
			{"TS_ASSUME_NETWORK_UP_FOR_TEST", "1"},
			{"TS_DISABLE_PORTMAPPER", "1"},
			{"TS_PANIC_IF_HIT_MAIN_CONTROL", "1"},
		} {
			if os.Getenv(kv[0]) == "" {
				envknob.Setenv(kv[0], kv[1])
			}
		}
	})
	logf := l.prefixLogf("tsnet " + hostname + ": ")
	s := &tsnet.Server{
		Dir:        t.TempDir(),
		Hostname:   hostname,
		ControlURL: l.ControlURL,
		AuthKey:    l.AuthKey,
		Logf:       logf,
		UserLogf:   logf,
	}
	t.Cleanup(func() { s.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
	defer cancel()
	if _, err := s.Up(ctx); err != nil {
		t.Fatalf("lab: tsnet %s: %v", hostname, err)
	}
	return s
}
