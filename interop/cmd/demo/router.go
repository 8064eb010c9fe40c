package main

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/microlink-go/microlink/interop/lab"
)

// routerNetns is the daemon's own network namespace, as on a router: its
// eth0 holds Far and is linked by a veth pair to the interface "router" of
// this process's namespace, which holds Near and is its default route.
type routerNetns struct {
	Name      string
	Near, Far netip.Prefix
}

// The addresses of the link.
var (
	routerNear = netip.MustParsePrefix("198.18.0.1/24")
	routerFar  = netip.MustParsePrefix("198.18.0.2/24")
)

// newRouterNetns makes the namespace ml-<pid>-router; r's Close deletes it.
// It first deletes those of demos that were killed before they could. It
// needs root and the ip command.
func newRouterNetns(r *lab.Runner) *routerNetns {
	removeStaleRouters(r)
	ns := &routerNetns{Name: fmt.Sprintf("ml-%d-router", os.Getpid()), Near: routerNear, Far: routerFar}
	ip := func(args ...string) {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			r.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
		}
	}
	ip("netns", "add", ns.Name)
	r.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "delete", ns.Name).CombinedOutput(); err != nil {
			r.Logf("ip netns delete %s: %v: %s", ns.Name, err, out)
		}
	})
	ip("-n", ns.Name, "link", "set", "lo", "up")
	ip("link", "add", "router", "type", "veth", "peer", "name", "eth0", "netns", ns.Name)
	// Deleting the namespace removes the pair too, but not at once, and
	// the next run in this process makes it again.
	r.Cleanup(func() { exec.Command("ip", "link", "delete", "router").Run() })
	ip("addr", "add", ns.Near.String(), "dev", "router")
	ip("link", "set", "router", "up")
	ip("-n", ns.Name, "addr", "add", ns.Far.String(), "dev", "eth0")
	ip("-n", ns.Name, "link", "set", "eth0", "up")
	ip("-n", ns.Name, "route", "add", "default", "via", ns.Near.Addr().String())
	return ns
}

// removeStaleRouters deletes the router namespaces, and their files in
// /etc/netns, of processes that no longer run.
func removeStaleRouters(r *lab.Runner) {
	run, _ := filepath.Glob("/run/netns/ml-*-router")
	etc, _ := filepath.Glob("/etc/netns/ml-*-router")
	for _, path := range append(run, etc...) {
		name := filepath.Base(path)
		pid, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(name, "ml-"), "-router"))
		if err != nil || fileExists(fmt.Sprintf("/proc/%d", pid)) {
			continue
		}
		if strings.HasPrefix(path, "/etc/") {
			os.RemoveAll(path)
			continue
		}
		if out, err := exec.Command("ip", "netns", "delete", name).CombinedOutput(); err != nil {
			r.Logf("ip netns delete %s: %v: %s", name, err, out)
		}
	}
}

// ResolvConf is the router's own /etc/resolv.conf: "ip netns exec" mounts
// the namespace's file in /etc/netns over this machine's for the programs
// it runs there, the daemon among them.
func (ns *routerNetns) ResolvConf() string {
	return filepath.Join("/etc/netns", ns.Name, "resolv.conf")
}

// giveResolvConf writes the router's own resolv.conf, before the programs
// that are to see it start; r's Close removes it.
func (ns *routerNetns) giveResolvConf(r *lab.Runner, content string) error {
	dir := filepath.Dir(ns.ResolvConf())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	r.Cleanup(func() {
		os.RemoveAll(dir)
		os.Remove("/etc/netns") // unless something else uses it
	})
	return os.WriteFile(ns.ResolvConf(), []byte(content), 0o644)
}

// Command returns an exec.Cmd that runs name in the namespace.
func (ns *routerNetns) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

// buildMicrolink builds the microlink command into dir as for a router
// (CGO_ENABLED=0, -trimpath, -ldflags=-s -w) and returns its path.
func buildMicrolink(ctx context.Context, dir string) (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(dir, "microlink")
	cmd := exec.CommandContext(ctx, goBin, "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "github.com/microlink-go/microlink/cmd/microlink")
	// In the interop module, whose go.mod points at this tree.
	if _, file, _, ok := runtime.Caller(0); ok {
		if dir := filepath.Join(filepath.Dir(file), "..", ".."); fileExists(filepath.Join(dir, "go.mod")) {
			cmd.Dir = dir
		}
	}
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/microlink: %v\n%s", err, out)
	}
	return bin, nil
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
