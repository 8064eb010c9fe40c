package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/microlink-go/microlink/interop/lab"
)

// step is one stage of the demo; see demo.steps.
type step struct {
	part  string // the heading it is shown under
	name  string
	fatal bool   // the steps after it need what it sets up
	needs []need // all must be met, or the step is skipped
	run   func(context.Context) error
	// feature, if set, is the flag of "microlink up" that the step
	// shows: it is left out if the microlink command has no such flag.
	feature string
}

// runStep runs step s as number num, or skips it for the reason skip, or
// records it as not run for the reason notRun, and returns the reason for
// the steps after it not to run, if any.
func (d *demo) runStep(ctx context.Context, num int, s step, skip, notRun string) string {
	res := result{num: num, name: s.name}
	if notRun == "" && ctx.Err() != nil {
		notRun = fmt.Sprintf("stopped: %v", context.Cause(ctx))
		d.failed = append(d.failed, fmt.Sprintf("stopped before %q: %v", s.name, context.Cause(ctx)))
	}
	if notRun != "" {
		res.status, res.reason = statusNotRun, notRun
		d.results = append(d.results, res)
		return notRun
	}
	d.header(num, s.part, s.name)
	if skip != "" {
		d.linef("skipped: %s", skip)
		res.status, res.reason = statusSkipped, skip
		d.results = append(d.results, res)
		return ""
	}
	start := time.Now()
	err := s.run(ctx)
	res.took = time.Since(start)
	res.status = statusPassed
	if err != nil {
		d.fail(s.name, err)
		res.status = statusFailed
		if s.fatal {
			notRun = fmt.Sprintf("step %d failed", num)
		}
	}
	d.results = append(d.results, res)
	return notRun
}

// need is a condition a step has of this machine or of the run's options.
// It returns why the step cannot run here, or "" if it can. It must give
// the same answer before the run as during it.
type need func() string

// needTUN is met if the real peer gets a TUN device, so that this process
// and OS commands reach tailnet addresses through it.
func (d *demo) needTUN() string {
	switch {
	case d.opts.Userspace:
		return "the real peer uses userspace networking, as --userspace asks"
	case os.Geteuid() != 0:
		return "a TUN device needs root"
	case !lab.InNetns():
		return "a TUN device needs a private network namespace, and there is no ip command (install iproute2)"
	}
	if err := lab.TUNAvailable(); err != nil {
		return strings.TrimPrefix(err.Error(), "lab: ")
	}
	return ""
}

// needCommand is met if the OS command name is installed; pkg is its
// package.
func needCommand(name, pkg string) need {
	return func() string {
		if _, err := exec.LookPath(name); err != nil {
			return fmt.Sprintf("no %s command (install %s)", name, pkg)
		}
		return ""
	}
}

// announceSkips prints the steps whose needs are unmet, and why, and
// returns the reasons by step (empty for steps that run).
func (d *demo) announceSkips(steps []step) []string {
	reasons := make([]string, len(steps))
	var lines []string
	for i, s := range steps {
		for _, n := range s.needs {
			if r := n(); r != "" {
				reasons[i] = r
				lines = append(lines, fmt.Sprintf("  [%d] %s: %s", i+1, s.name, r))
				break
			}
		}
	}
	if len(lines) == 0 {
		return reasons
	}
	if os.Geteuid() != 0 {
		fmt.Fprintf(d.out, "\nNot run as root, so %s skipped:\n", plural(len(lines), "step is", "steps are"))
	} else {
		fmt.Fprintf(d.out, "\nIn this run %s skipped:\n", plural(len(lines), "step is", "steps are"))
	}
	fmt.Fprintln(d.out, strings.Join(lines, "\n"))
	if os.Geteuid() != 0 {
		fmt.Fprintf(d.out, "Run as root, scripts/demo.sh installs what the steps need and runs them all.\n")
	}
	return reasons
}

// Outcomes of a step.
const (
	statusPassed  = "passed"
	statusFailed  = "FAILED"
	statusSkipped = "skipped"
	statusNotRun  = "not run"
)

// result is the outcome of one step, for the summary.
type result struct {
	num    int
	name   string
	status string
	reason string        // why it was skipped or not run
	took   time.Duration // for steps that ran
}

// summary prints each step's outcome and time, and the verdict.
func (d *demo) summary(total time.Duration) {
	fmt.Fprintf(d.out, "\nSummary (%v in all)\n", total.Round(100*time.Millisecond))
	skipped := 0
	for _, r := range d.results {
		took, name := "", r.name
		switch r.status {
		case statusPassed, statusFailed:
			took = fmtTook(r.took)
		case statusSkipped:
			skipped++
			name += " (" + r.reason + ")"
		case statusNotRun:
			name += " (" + r.reason + ")"
		}
		fmt.Fprintf(d.out, "  %4s  %-7s  %6s  %s\n", fmt.Sprintf("[%d]", r.num), r.status, took, name)
	}
	fmt.Fprintln(d.out)
	switch {
	case len(d.failed) > 0:
		fmt.Fprintf(d.out, "FAILED:\n")
		for _, f := range d.failed {
			fmt.Fprintf(d.out, "  - %s\n", f)
		}
	case skipped > 0:
		fmt.Fprintf(d.out, "All steps that ran passed; %s skipped.\n", plural(skipped, "step was", "steps were"))
	default:
		fmt.Fprintf(d.out, "All steps passed.\n")
	}
}

// fmtTook formats a step's time in milliseconds, with a tenth below 10 ms,
// or in seconds with a tenth from one second up.
func fmtTook(d time.Duration) string {
	switch {
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000)
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	}
	return fmt.Sprintf("%.1fs", d.Seconds())
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
