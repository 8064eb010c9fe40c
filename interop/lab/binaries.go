package lab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
)

// TailscaleVersion is the version of tailscale.com whose binaries the lab runs.
// It must match the version required by the interop module's go.mod.
const TailscaleVersion = "v1.102.5"

// Environment variables that select where binaries come from.
const (
	// EnvBinDir names a directory holding prebuilt tailscaled and tailscale
	// binaries. When set, nothing is built.
	EnvBinDir = "MICROLINK_TS_BIN"
	// EnvCache names the cache root. Binaries are built into
	// $MICROLINK_CACHE/tailscale-<version>. It defaults to
	// microlink-interop under the user cache directory (~/.cache).
	EnvCache = "MICROLINK_CACHE"
)

var binOnce struct {
	sync.Once
	tailscaled, tailscale string
	err                   error
}

// Binaries returns the paths of tailscaled and tailscale built from
// tailscale.com at TailscaleVersion.
//
// If $MICROLINK_TS_BIN is set, the binaries are taken from that directory
// and an error is returned if either is missing. Otherwise they are built
// once into CacheDir with "go build", run in the interop module directory,
// and reused by later calls and later test runs. A file lock next to the
// cache directory keeps concurrent test binaries from building at the same
// time. A cold build takes minutes; see build-tailscale.sh in the interop
// module to build ahead of time.
func Binaries() (tailscaled, tailscale string, err error) {
	binOnce.Do(func() {
		binOnce.tailscaled, binOnce.tailscale, binOnce.err = findOrBuild()
	})
	return binOnce.tailscaled, binOnce.tailscale, binOnce.err
}

// CacheDir returns the directory into which Binaries builds when
// $MICROLINK_TS_BIN is not set.
func CacheDir() (string, error) {
	root := os.Getenv(EnvCache)
	if root == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			return "", fmt.Errorf("lab: no cache directory (set %s or %s): %w", EnvBinDir, EnvCache, err)
		}
		root = filepath.Join(base, "microlink-interop")
	}
	return filepath.Join(root, "tailscale-"+TailscaleVersion), nil
}

func findOrBuild() (tailscaled, tailscale string, err error) {
	if dir := os.Getenv(EnvBinDir); dir != "" {
		if err := haveBinaries(dir); err != nil {
			return "", "", fmt.Errorf("lab: %s=%s: %w", EnvBinDir, dir, err)
		}
		return filepath.Join(dir, "tailscaled"), filepath.Join(dir, "tailscale"), nil
	}
	dir, err := CacheDir()
	if err != nil {
		return "", "", err
	}
	if haveBinaries(dir) == nil {
		return filepath.Join(dir, "tailscaled"), filepath.Join(dir, "tailscale"), nil
	}
	if err := buildLocked(dir); err != nil {
		return "", "", err
	}
	return filepath.Join(dir, "tailscaled"), filepath.Join(dir, "tailscale"), nil
}

func haveBinaries(dir string) error {
	for _, name := range []string{"tailscaled", "tailscale"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			return fmt.Errorf("%s is not an executable file", filepath.Join(dir, name))
		}
	}
	return nil
}

// buildLocked builds the binaries into dir while holding an exclusive
// flock on dir+".lock". Another process may have finished the build while
// this one waited for the lock; that is checked again under the lock.
func buildLocked(dir string) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	lock, err := os.OpenFile(dir+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("lab: locking %s: %w", lock.Name(), err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)

	if haveBinaries(dir) == nil {
		return nil
	}
	modDir, err := moduleDir()
	if err != nil {
		return err
	}
	goBin, err := goCommand()
	if err != nil {
		return err
	}
	// Build into a scratch directory and move the results into place so a
	// reader never sees a half-written binary.
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".build-")
	if err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	defer os.RemoveAll(tmp)
	cmd := exec.Command(goBin, "build", "-o", tmp+string(filepath.Separator),
		"tailscale.com/cmd/tailscaled", "tailscale.com/cmd/tailscale")
	cmd.Dir = modDir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("lab: building tailscale %s in %s: %v\n%s", TailscaleVersion, modDir, err, out)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	for _, name := range []string{"tailscaled", "tailscale"} {
		if err := os.Rename(filepath.Join(tmp, name), filepath.Join(dir, name)); err != nil {
			return fmt.Errorf("lab: %w", err)
		}
	}
	return nil
}

// moduleDir returns the interop module directory: the parent of this
// package's source directory when the sources are present, otherwise the
// nearest directory at or above the working directory holding a go.mod.
func moduleDir() (string, error) {
	if _, file, _, ok := runtime.Caller(0); ok {
		d := filepath.Dir(filepath.Dir(file))
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
	}
	d, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("lab: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", errors.New("lab: cannot find the interop module directory to build tailscale in")
		}
		d = parent
	}
}

func goCommand() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	p := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("lab: no go command to build tailscale with (set %s): %w", EnvBinDir, err)
	}
	return p, nil
}
