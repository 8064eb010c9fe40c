package lab

// T is what the lab needs from its caller: a place to log, to fail and to
// register cleanups. *testing.T and *testing.B satisfy it, as does a
// Runner for ordinary programs.
//
// Fatalf must not return: testing.T stops the test goroutine, and a Runner
// panics (see Runner.Do).
type T interface {
	Helper()
	Logf(format string, args ...any)
	Fatalf(format string, args ...any)
	Cleanup(func())
	TempDir() string
	Failed() bool
}
