//go:build unix

package osdns

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// runTimeout bounds a command the package runs.
const runTimeout = 10 * time.Second

// run runs the program at path with args and returns an error with the
// start of its output if it fails. It forks with package syscall, which
// links in less than os/exec or os.StartProcess.
func run(path string, args ...string) error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	pid, err := syscall.ForkExec(path, append([]string{path}, args...), &syscall.ProcAttr{
		Env:   os.Environ(),
		Files: []uintptr{^uintptr(0), w.Fd(), w.Fd()}, // no stdin
	})
	w.Close()
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	// The output ends when the program does; one that takes too long is
	// killed (it is not reaped yet, so pid is still its).
	r.SetReadDeadline(time.Now().Add(runTimeout))
	out, _ := io.ReadAll(io.LimitReader(r, 512))
	if _, err := io.Copy(io.Discard, r); err != nil {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	var ws syscall.WaitStatus
	for {
		_, err = syscall.Wait4(pid, &ws, 0, nil)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		return err
	}
	if ws.Exited() && ws.ExitStatus() == 0 {
		return nil
	}
	status := fmt.Sprintf("exit status %d", ws.ExitStatus())
	if ws.Signaled() {
		status = "killed by " + ws.Signal().String()
	}
	msg := strings.TrimSpace(string(bytes.ToValidUTF8(out, nil)))
	return errors.New(filepath.Base(path) + " " + strings.Join(args, " ") + ": " + status + ": " + msg)
}
