package lab

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// Runner lets an ordinary program, not a test, use the lab: it implements
// T by logging through a function, recording cleanups to run at Close and
// turning Fatalf into a panic that Do recovers.
//
//	r := lab.NewRunner("demo", log.Printf)
//	defer r.Close()
//	var l *lab.Lab
//	if err := r.Do(func() { l = lab.Start(r, lab.Options{}) }); err != nil {
//		log.Fatal(err)
//	}
type Runner struct {
	name string
	logf func(string, ...any)

	mu       sync.Mutex
	failed   bool
	closed   bool
	cleanups []func()
	tempRoot string
	tempSeq  int
}

// NewRunner returns a Runner whose Logf calls logf; nil discards the logs.
// The name appears in error messages and temporary directory names.
func NewRunner(name string, logf func(string, ...any)) *Runner {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	return &Runner{name: name, logf: logf}
}

// FatalError is the value a Runner's Fatalf panics with, and the error Do
// returns for it.
type FatalError struct {
	Name string // the Runner's name
	Msg  string
}

func (e *FatalError) Error() string { return e.Name + ": " + e.Msg }

// Name returns the name given to NewRunner.
func (r *Runner) Name() string { return r.name }

// Helper does nothing; it is part of T.
func (r *Runner) Helper() {}

// Logf logs through the function given to NewRunner.
func (r *Runner) Logf(format string, args ...any) { r.logf(format, args...) }

// Fail marks the Runner as failed, so that cleanups which report more on
// failure (the log tail of a tailscaled, for example) do so at Close.
func (r *Runner) Fail() {
	r.mu.Lock()
	r.failed = true
	r.mu.Unlock()
}

// Failed reports whether Fail or Fatalf was called.
func (r *Runner) Failed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failed
}

// Fatalf marks the Runner as failed and panics with a *FatalError holding
// the message. Call the lab's functions inside Do, which turns that panic
// into an error; Fatalf must only be called on the goroutine running Do.
func (r *Runner) Fatalf(format string, args ...any) {
	r.Fail()
	panic(&FatalError{Name: r.name, Msg: fmt.Sprintf(format, args...)})
}

// Do calls f and returns the *FatalError of a Fatalf called during f, or
// nil if f returned normally. Other panics pass through.
func (r *Runner) Do(f func()) (err error) {
	defer func() {
		if v := recover(); v != nil {
			fe, ok := v.(*FatalError)
			if !ok {
				panic(v)
			}
			err = fe
		}
	}()
	f()
	return nil
}

// Cleanup registers f to run at Close. Cleanups run in the reverse order of
// registration. After Close, f runs at once.
func (r *Runner) Cleanup(f func()) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		r.runCleanup(f)
		return
	}
	r.cleanups = append(r.cleanups, f)
	r.mu.Unlock()
}

// TempDir returns a new directory, removed at Close. Each call returns a
// different directory. It calls Fatalf if the directory cannot be made.
func (r *Runner) TempDir() string {
	dir, err := r.newTempDir()
	if err != nil {
		r.Fatalf("TempDir: %v", err)
	}
	return dir
}

func (r *Runner) newTempDir() (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return "", errors.New("called after Close")
	}
	if r.tempRoot == "" {
		root, err := os.MkdirTemp("", "lab-"+sanitize(r.name)+"-")
		if err != nil {
			return "", err
		}
		r.tempRoot = root
	}
	r.tempSeq++
	dir := filepath.Join(r.tempRoot, fmt.Sprintf("%03d", r.tempSeq))
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", err
	}
	return dir, nil
}

// Close runs the registered cleanups, last registered first, and removes
// the directories made by TempDir. A cleanup that calls Fatalf or panics
// does not stop the others; Close returns their errors joined. Calls after
// the first do nothing.
func (r *Runner) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	r.mu.Unlock()
	var errs []error
	for {
		// Cleanups may register further cleanups; take them one by one.
		r.mu.Lock()
		if len(r.cleanups) == 0 {
			r.mu.Unlock()
			break
		}
		f := r.cleanups[len(r.cleanups)-1]
		r.cleanups = r.cleanups[:len(r.cleanups)-1]
		r.mu.Unlock()
		if err := r.runCleanup(f); err != nil {
			errs = append(errs, err)
		}
	}
	r.mu.Lock()
	root := r.tempRoot
	r.mu.Unlock()
	if root != "" {
		if err := os.RemoveAll(root); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (r *Runner) runCleanup(f func()) (err error) {
	defer func() {
		if v := recover(); v != nil {
			if fe, ok := v.(*FatalError); ok {
				err = fe
			} else {
				err = fmt.Errorf("%s: cleanup panicked: %v", r.name, v)
			}
		}
	}()
	f()
	return nil
}

func sanitize(name string) string {
	name = strings.Map(func(c rune) rune {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
			return c
		}
		return '_'
	}, name)
	if len(name) > 32 {
		name = name[:32]
	}
	return name
}

var _ T = (*Runner)(nil)
