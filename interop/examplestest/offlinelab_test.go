package examplestest

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestOfflineLab follows the examples' README: start offlinelab, take the
// environment it prints, and run an example with nothing else.
func TestOfflineLab(t *testing.T) {
	labBin := build(t, "github.com/microlink-go/microlink/interop/examplestest/offlinelab")
	basic := build(t, examples+"basic_connect")
	envFile := filepath.Join(t.TempDir(), "lab.env")

	ol := start(t, "offlinelab", labBin, nil, "-env", envFile)
	ctl := ol.waitLine(t, 20*time.Second, regexp.MustCompile(`^export TS_CONTROL_URL=(http://127\.0\.0\.1:\d+)$`))
	key := ol.waitLine(t, 5*time.Second, regexp.MustCompile(`^export TS_AUTHKEY=(\S+)$`))
	peer := ol.waitLine(t, 5*time.Second, regexp.MustCompile(`^real peer "real-peer" at (100\.64\.\d+\.\d+);`))
	b, err := os.ReadFile(envFile)
	if err != nil || !strings.Contains(string(b), ctl[0]+"\n") || !strings.Contains(string(b), key[0]+"\n") {
		t.Fatalf("env file %q (%v) does not hold the printed exports", b, err)
	}

	env := labEnv("TS_CONTROL_URL="+ctl[1], "TS_AUTHKEY="+key[1], "TS_HOSTNAME=by-hand",
		"TS_STATE_DIR="+t.TempDir(), "TS_PORT=-1")
	p := start(t, "basic_connect", basic, env, "-timeout", "20s")
	if err := p.wait(t, 20*time.Second); err != nil {
		t.Fatalf("basic_connect: %v", err)
	}
	listed := false
	for _, line := range p.output() {
		f := strings.Fields(line)
		listed = listed || len(f) >= 2 && f[0] == "real-peer" && strings.HasPrefix(f[1], peer[1]+",")
	}
	if !listed {
		t.Fatalf("basic_connect did not list real-peer at %s:\n%s", peer[1], strings.Join(p.output(), "\n"))
	}

	ol.stop(t)
	if _, err := os.Stat(envFile); !os.IsNotExist(err) {
		t.Errorf("env file left behind: %v", err)
	}
}
