package router

import (
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/microlink-go/microlink/internal/netlink/nltest"
)

func testLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func readSwitch(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Error(err)
	}
	return strings.TrimSpace(string(b))
}

// ruleset lists the namespace's nftables rules with the nft command, the
// independent judge of what the netlink messages made.
func ruleset(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("nft", "list", "ruleset").CombinedOutput()
	if err != nil {
		t.Errorf("nft list ruleset: %v: %s", err, out)
	}
	return string(out)
}

func TestKernelSNAT(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("needs the nft command to check the rules")
	}
	nltest.InNetns(t, func() {
		if readSwitch(t, forward4) != "0" || readSwitch(t, forward6) != "0" {
			t.Error("a new namespace forwards already")
			return
		}
		k, err := StartKernel("mltest0", []netip.Prefix{netip.MustParsePrefix("198.19.1.0/24"), netip.MustParsePrefix("2001:db8::/64")}, true, testLogger())
		if err != nil {
			t.Error(err)
			return
		}
		rs := ruleset(t)
		for _, want := range []string{"table ip microlink", "table ip6 microlink",
			"type nat hook postrouting priority srcnat; policy accept;",
			`iifname "mltest0" oifname != "mltest0" masquerade`} {
			if !strings.Contains(rs, want) {
				t.Errorf("ruleset lacks %q:\n%s", want, rs)
			}
		}
		if readSwitch(t, forward4) != "1" || readSwitch(t, forward6) != "1" {
			t.Error("forwarding not turned on")
		}
		if err := k.Close(); err != nil {
			t.Error(err)
		}
		if rs := ruleset(t); strings.Contains(rs, "microlink") {
			t.Errorf("left after Close:\n%s", rs)
		}
		if readSwitch(t, forward4) != "0" || readSwitch(t, forward6) != "0" {
			t.Error("forwarding not turned back off")
		}

		// Without SNAT, an IPv4 route only: forwarding for IPv4 alone.
		k, err = StartKernel("mltest0", []netip.Prefix{netip.MustParsePrefix("198.19.1.0/24")}, false, testLogger())
		if err != nil {
			t.Error(err)
			return
		}
		if rs := ruleset(t); strings.Contains(rs, "microlink") || readSwitch(t, forward4) != "1" || readSwitch(t, forward6) != "0" {
			t.Errorf("without SNAT: forward %s/%s, rules:\n%s", readSwitch(t, forward4), readSwitch(t, forward6), rs)
		}
		k.Close()
	})
}

// TestCleanupLeftovers: the tables of a killed run are found and removed.
func TestCleanupLeftovers(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("needs the nft command to check the rules")
	}
	nltest.InNetns(t, func() {
		if removed, err := Cleanup(); removed || err != nil {
			t.Errorf("clean namespace: removed %v, %v", removed, err)
		}
		if err := addSNAT("mltest0", false); err != nil {
			t.Error(err)
			return
		}
		if removed, err := Cleanup(); !removed || err != nil {
			t.Errorf("leftovers: removed %v, %v", removed, err)
		}
		if rs := ruleset(t); strings.Contains(rs, "microlink") {
			t.Errorf("left after Cleanup:\n%s", rs)
		}
	})
}
