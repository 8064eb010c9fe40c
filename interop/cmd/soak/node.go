package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/microlink-go/microlink"
)

// The node is this program run again in microlink's namespace with envNode
// set: a microlink node with a UDP echo on echoPort. It answers "sample"
// lines on stdin with a nodeSample line on stdout; it logs to stderr.
const (
	envNode     = "MICROLINK_SOAK_NODE"
	envControl  = "MICROLINK_SOAK_CONTROL"
	envAuthKey  = "MICROLINK_SOAK_AUTHKEY"
	envStateDir = "MICROLINK_SOAK_STATEDIR"
	envDebug    = "MICROLINK_SOAK_DEBUG"

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

func nodeMain() int {
	level := slog.LevelInfo
	if os.Getenv(envDebug) != "" {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	n, err := microlink.New(microlink.Config{
		AuthKey:    os.Getenv(envAuthKey),
		ControlURL: os.Getenv(envControl),
		Hostname:   nodeName,
		StateDir:   os.Getenv(envStateDir),
		Port:       -1,
		Logger:     logger,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "node:", err)
		return 1
	}
	defer n.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	err = n.Start(ctx)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "node: Start:", err)
		return 1
	}
	echo, err := n.ListenUDP(echoPort)
	if err != nil {
		fmt.Fprintln(os.Stderr, "node:", err)
		return 1
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 2048)
		for {
			m, from, err := echo.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			_, err = echo.WriteToUDPAddrPort(buf[:m], from)
			var seq uint64
			if m == 12 {
				seq = binary.BigEndian.Uint64(buf[4:12])
			}
			logger.Debug("soak: echo", "from", from, "seq", seq, "err", err)
		}
	}()
	defer func() { echo.Close(); wg.Wait() }()

	sample := func() nodeSample {
		// After a collection, HeapInuse is the live heap rather than
		// wherever the collector's cycle happens to be.
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		st := n.Stats()
		return nodeSample{
			IPv4: n.IPv4(), NodeKey: n.Status().NodeKey, State: n.State().String(),
			Goroutines: runtime.NumGoroutine(), HeapInuse: ms.HeapInuse,
			MapUpdates: st.MapUpdates, RegisterRequests: st.RegisterRequests,
		}
	}
	out := json.NewEncoder(os.Stdout)
	out.Encode(sample())
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if in.Text() != "sample" {
			out.Encode(nodeSample{Err: "unknown request " + in.Text()})
			continue
		}
		out.Encode(sample())
	}
	return 0
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

func startNode(ns, controlURL, authKey, stateDir, logPath string, debug bool) (*node, nodeSample, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, nodeSample{}, err
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, nodeSample{}, err
	}
	n := &node{done: make(chan struct{})}
	n.cmd = exec.Command("ip", "netns", "exec", ns, self)
	n.cmd.Env = append(os.Environ(), envNode+"=1", envControl+"="+controlURL, envAuthKey+"="+authKey, envStateDir+"="+stateDir)
	if debug {
		n.cmd.Env = append(n.cmd.Env, envDebug+"=1")
	}
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
