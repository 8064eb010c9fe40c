package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestInstallHelper runs deps_install of scripts/lib/deps.sh, which
// demo.sh, test.sh and cross-test.sh share, against stand-ins for apt-get
// and id: as root it installs each missing package once and only those;
// not as root it installs nothing, says nothing and names what is missing.
func TestInstallHelper(t *testing.T) {
	helper, err := filepath.Abs("../../../scripts/lib/deps.sh")
	if err != nil {
		t.Fatal(err)
	}
	const (
		// Two commands of package a, one of b, one present already.
		usual = "mlcmd-a:mlpkg-a mlcmd-a2:mlpkg-a mlcmd-b:mlpkg-b mlcmd-here:mlpkg-here"
		// A package that does not bring its command.
		hollow = "mlcmd-none:mlpkg-none"
	)
	for _, tc := range []struct {
		name    string
		uid     string
		deps    string
		failing bool   // the first apt-get install fails, as with stale package lists
		noApt   bool   // no apt-get at all
		calls   string // apt-get's command lines, one a line
		rc      string
		missing string // DEPS_MISSING afterwards
		stderr  string
	}{
		{name: "root", uid: "0", deps: usual,
			calls: "install -y -qq mlpkg-a mlpkg-b\n", rc: "0",
			stderr: "t: installing mlpkg-a mlpkg-b\n"},
		{name: "stale lists", uid: "0", deps: usual, failing: true,
			calls: "install -y -qq mlpkg-a mlpkg-b\nupdate -qq\ninstall -y -qq mlpkg-a mlpkg-b\n", rc: "0",
			stderr: "t: installing mlpkg-a mlpkg-b\n"},
		{name: "hollow package", uid: "0", deps: hollow,
			calls: "install -y -qq mlpkg-none\n", rc: "1", missing: "mlpkg-none",
			stderr: "t: installing mlpkg-none\nt: installed, but still missing commands from mlpkg-none\n"},
		{name: "nothing missing", uid: "0", deps: "mlcmd-here:mlpkg-here", rc: "0"},
		{name: "not root", uid: "1000", deps: usual, rc: "1", missing: "mlpkg-a mlpkg-b"},
		{name: "no apt-get", uid: "0", deps: usual, noApt: true, rc: "1", missing: "mlpkg-a mlpkg-b",
			stderr: "t: missing mlpkg-a mlpkg-b, and there is no apt-get to install them with\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bin := t.TempDir()
			log := filepath.Join(bin, "calls")
			// apt-get "installs" mlpkg-X by creating the commands mlcmd-X
			// and mlcmd-X2, except for mlpkg-none.
			aptGet := `#!/bin/sh
echo "$*" >>` + log + `
if [ "$1" = install ] && [ -n "$FAIL_ONCE" ] && [ ! -e ` + bin + `/failed ]; then
	touch ` + bin + `/failed
	exit 100
fi
for a; do
	case $a in mlpkg-none) ;; mlpkg-*)
		for c in mlcmd-${a#mlpkg-} mlcmd-${a#mlpkg-}2; do printf '#!/bin/sh\n' >` + bin + `/$c; chmod +x ` + bin + `/$c; done ;;
	esac
done
`
			if !tc.noApt {
				write(t, filepath.Join(bin, "apt-get"), aptGet)
			}
			write(t, filepath.Join(bin, "id"), "#!/bin/sh\necho "+tc.uid+"\n")
			write(t, filepath.Join(bin, "mlcmd-here"), "#!/bin/sh\n")
			cmd := exec.Command("bash", "-c", ". "+helper+"\ndeps_install t "+tc.deps+"\necho \"rc=$? missing=$DEPS_MISSING\"")
			// The system's directories only for the apt-get stand-in's
			// commands; never the real apt-get.
			cmd.Env = []string{"PATH=" + bin + ":/usr/bin:/bin"}
			if tc.noApt {
				cmd.Env = []string{"PATH=" + bin}
			}
			if tc.failing {
				cmd.Env = append(cmd.Env, "FAIL_ONCE=1")
			}
			var stderr strings.Builder
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("%v: %s", err, stderr.String())
			}
			if got, want := strings.TrimSpace(string(out)), "rc="+tc.rc+" missing="+tc.missing; got != want {
				t.Errorf("got %q, want %q", got, want)
			}
			calls, _ := os.ReadFile(log)
			if string(calls) != tc.calls {
				t.Errorf("apt-get calls:\n%s\nwant:\n%s", calls, tc.calls)
			}
			if stderr.String() != tc.stderr {
				t.Errorf("stderr %q, want %q", stderr.String(), tc.stderr)
			}
		})
	}
}

func write(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o755); err != nil {
		t.Fatal(err)
	}
}
