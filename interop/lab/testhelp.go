package lab

import (
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Logger returns a logger that writes into t's log until t ends, so a
// failing test shows what a node did. It logs at debug level when
// $MICROLINK_TEST_DEBUG is set, else at info.
func Logger(t T) *slog.Logger {
	w := &tWriter{t: t}
	t.Cleanup(w.stop)
	level := slog.LevelInfo
	if os.Getenv("MICROLINK_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// tWriter writes lines into a test's log; after stop it drops them, since
// a testing.T must not be used once its test has ended.
type tWriter struct {
	mu   sync.Mutex
	t    T
	done bool
}

func (w *tWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Logf("%s", strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *tWriter) stop() { w.mu.Lock(); w.done = true; w.mu.Unlock() }

// WaitFor polls cond every 20 ms until it holds, and fails t if d passes
// first.
func WaitFor(t T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WriteBench appends v as one line of JSON to name in
// $MICROLINK_BENCH_OUT, if set, for scripts/bench.sh; each run of a test
// adds a line.
func WriteBench(t testing.TB, name string, v any) {
	t.Helper()
	dir := os.Getenv("MICROLINK_BENCH_OUT")
	if dir == "" {
		return
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err == nil {
		_, err = f.Write(append(b, '\n'))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		t.Errorf("writing %s: %v", name, err)
	}
}
