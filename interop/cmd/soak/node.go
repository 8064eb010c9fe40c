package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The node is the soaknode program, run in microlink's namespace: a
// microlink node with a UDP echo on echoPort, and nothing else linked in,
// so that its RSS is a node's. It answers "sample" lines on stdin with a
// nodeSample line on stdout; it logs to stderr.
const (
	echoPort = 9000
	nodeName = "soak-ml"
)

// nodeSample is what the node reports about itself.
type nodeSample struct {
	IPv4             netip.Addr `json:"ipv4"`
	NodeKey          string     `json:"nodeKey"`
	State            string     `json:"state"`
	Goroutines       int        `json:"goroutines"`
	HeapInuse        uint64     `json:"heapInuse"`
	MapUpdates       uint64     `json:"mapUpdates"`
	RegisterRequests uint64     `json:"registerRequests"`
	Err              string     `json:"err,omitempty"`
}

// node is the driver's handle on the node process.
type node struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Scanner
	mu   sync.Mutex
	done chan struct{}
	pid  int
}

func startNode(bin, ns, controlURL, authKey, stateDir, logPath string, debug bool) (*node, nodeSample, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, nodeSample{}, err
	}
	n := &node{done: make(chan struct{})}
	args := []string{"netns", "exec", ns, bin, "-control", controlURL, "-authkey", authKey, "-statedir", stateDir,
		"-hostname", nodeName, "-port", fmt.Sprint(echoPort)}
	if debug {
		args = append(args, "-debug")
	}
	n.cmd = exec.Command("ip", args...)
	n.cmd.Stderr = logf
	if n.in, err = n.cmd.StdinPipe(); err != nil {
		return nil, nodeSample{}, err
	}
	stdout, err := n.cmd.StdoutPipe()
	if err != nil {
		return nil, nodeSample{}, err
	}
	n.out = bufio.NewScanner(stdout)
	if err := n.cmd.Start(); err != nil {
		return nil, nodeSample{}, err
	}
	n.pid = n.cmd.Process.Pid // "ip netns exec" execs the program in place
	go func() { n.cmd.Wait(); logf.Close(); close(n.done) }()
	first, err := n.read(90 * time.Second)
	if err != nil {
		n.stop()
		return nil, nodeSample{}, fmt.Errorf("node did not start: %w (log: %s)", err, logPath)
	}
	return n, first, nil
}

func (n *node) read(d time.Duration) (nodeSample, error) {
	type result struct {
		s   nodeSample
		err error
	}
	ch := make(chan result, 1)
	go func() {
		var r result
		if !n.out.Scan() {
			r.err = errors.New("node exited")
		} else {
			r.err = json.Unmarshal(n.out.Bytes(), &r.s)
		}
		ch <- r
	}()
	select {
	case r := <-ch:
		return r.s, r.err
	case <-time.After(d):
		return nodeSample{}, fmt.Errorf("no answer within %v", d)
	}
}

// sample asks the node about itself.
func (n *node) sample() (nodeSample, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, err := io.WriteString(n.in, "sample\n"); err != nil {
		return nodeSample{}, err
	}
	return n.read(20 * time.Second)
}

// stop closes the node's stdin, which makes it close and exit.
func (n *node) stop() {
	n.in.Close()
	select {
	case <-n.done:
	case <-time.After(15 * time.Second):
		n.cmd.Process.Kill()
		<-n.done
	}
}

// procStats reads the node process's resident memory (bytes) and number of
// open file descriptors from /proc.
func (n *node) procStats() (rss uint64, fds int, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", n.pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				kb, _ := strconv.ParseUint(f[0], 10, 64)
				rss = kb << 10
			}
		}
	}
	ents, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(n.pid), "fd"))
	if err != nil {
		return 0, 0, err
	}
	return rss, len(ents), nil
}
