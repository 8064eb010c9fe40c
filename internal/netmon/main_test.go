package netmon

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// envNetns marks the test binary re-executed in a network namespace of
// its own, where tests may add interfaces, addresses and routes.
const envNetns = "MICROLINK_NETMON_TEST_NETNS"

func TestMain(m *testing.M) {
	if os.Getenv(envNetns) == "" && os.Geteuid() == 0 {
		if unshare, err := exec.LookPath("unshare"); err == nil {
			os.Exit(reexecInNetns(unshare))
		}
	}
	os.Exit(m.Run())
}

// reexecInNetns runs the test binary again in a fresh network namespace
// that ends with it.
func reexecInNetns(unshare string) int {
	cmd := exec.Command(unshare, append([]string{"--net", os.Args[0]}, os.Args[1:]...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), envNetns+"=1")
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee) && ee.ExitCode() > 0:
		return ee.ExitCode()
	default:
		fmt.Fprintln(os.Stderr, "netmon test: running in a network namespace:", err)
		return 1
	}
}

// needNetns skips tests that change the network unless the process runs in
// a namespace of its own.
func needNetns(t *testing.T) {
	t.Helper()
	if os.Getenv(envNetns) == "" {
		t.Skip("needs root and unshare(1) to run in a network namespace of its own")
	}
	// New interfaces get their IPv6 link-local addresses at once, not
	// after duplicate address detection a second or two later, so that
	// the events a test causes come while it waits for them.
	for _, conf := range []string{"all", "default"} {
		p := "/proc/sys/net/ipv6/conf/" + conf + "/accept_dad"
		if err := os.WriteFile(p, []byte("0"), 0o644); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
	}
}
