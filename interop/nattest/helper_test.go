package nattest

import (
	"bufio"
	"bytes"
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
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microlink-go/microlink"
	"github.com/microlink-go/microlink/interop/lab"
)

// The helper is this test binary run again inside a host namespace with
// envHelper set: it runs a microlink node there, echoes UDP datagrams on
// echoPort, and answers requests, one JSON object per line, on stdin and
// stdout. Its logs go to stderr.
const (
	envHelper   = "MICROLINK_NATTEST_HELPER"
	envControl  = "MICROLINK_NATTEST_CONTROL"
	envAuthKey  = "MICROLINK_NATTEST_AUTHKEY"
	envHostname = "MICROLINK_NATTEST_HOSTNAME"
	envStateDir = "MICROLINK_NATTEST_STATEDIR"

	echoPort = 9000
)

type helperRequest struct {
	Op     string `json:"op"` // "status", "ping", "rebind", "arrivals"
	Target string `json:"target,omitempty"`
	Type   string `json:"type,omitempty"`  // for ping: "disco", "TSMP", "ICMP"
	Since  int64  `json:"since,omitempty"` // for arrivals: unix nanoseconds
}

// arrival is a stream datagram's arrival at the echo port.
type arrival struct {
	Seq int   `json:"seq"`
	At  int64 `json:"at"` // unix nanoseconds
}

type helperReply struct {
	Err     string                `json:"err,omitempty"`
	IPv4    netip.Addr            `json:"ipv4"`
	NodeKey string                `json:"nodeKey,omitempty"`
	Peers   []microlink.Peer      `json:"peers,omitempty"`
	Ping    *microlink.PingResult `json:"ping,omitempty"`
	Stats   *microlink.Stats      `json:"stats,omitempty"`
	// Arrivals are the stream datagrams that reached the echo port.
	Arrivals []arrival `json:"arrivals,omitempty"`
}

func helperMain() int {
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	n, err := microlink.New(microlink.Config{
		AuthKey:    os.Getenv(envAuthKey),
		ControlURL: os.Getenv(envControl),
		Hostname:   os.Getenv(envHostname),
		StateDir:   os.Getenv(envStateDir),
		Port:       -1,
		Logger:     logger,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	defer n.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	err = n.Start(ctx)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper: Start:", err)
		return 1
	}
	echo, err := n.ListenUDP(echoPort)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	echoDone := make(chan struct{})
	var arrivalsMu sync.Mutex
	var arrivals []arrival
	go func() {
		defer close(echoDone)
		buf := make([]byte, 2048)
		for {
			m, from, err := echo.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if m == streamDatagramLen {
				arrivalsMu.Lock()
				arrivals = append(arrivals, arrival{Seq: int(binary.BigEndian.Uint64(buf)), At: time.Now().UnixNano()})
				arrivalsMu.Unlock()
			}
			echo.WriteToUDPAddrPort(buf[:m], from)
		}
	}()
	defer func() { echo.Close(); <-echoDone }()

	out := json.NewEncoder(os.Stdout)
	out.Encode(helperReply{IPv4: n.IPv4(), NodeKey: n.Status().NodeKey})
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var req helperRequest
		var rep helperReply
		if err := json.Unmarshal(in.Bytes(), &req); err != nil {
			rep.Err = err.Error()
			out.Encode(rep)
			continue
		}
		rep.IPv4, rep.NodeKey = n.IPv4(), n.Status().NodeKey
		switch req.Op {
		case "status":
			rep.Peers = n.Peers()
		case "ping":
			typ := map[string]microlink.PingType{"disco": microlink.PingDisco, "TSMP": microlink.PingTSMP, "ICMP": microlink.PingICMP}[req.Type]
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			res, err := n.Ping(ctx, req.Target, typ)
			cancel()
			if err != nil {
				rep.Err = err.Error()
			} else {
				rep.Ping = &res
			}
		case "arrivals":
			arrivalsMu.Lock()
			for _, a := range arrivals {
				if a.At >= req.Since {
					rep.Arrivals = append(rep.Arrivals, a)
				}
			}
			arrivalsMu.Unlock()
		case "stats":
			st := n.Stats()
			rep.Stats = &st
		case "rebind":
			if err := n.Rebind(); err != nil {
				rep.Err = err.Error()
			}
		default:
			rep.Err = "unknown op " + req.Op
		}
		out.Encode(rep)
	}
	return 0 // stdin closed: the test is done with us
}

// mlNode is a microlink node running in a helper process.
type mlNode struct {
	Hostname string
	IPv4     netip.Addr
	NodeKey  string
	NS       string

	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Scanner
	mu   sync.Mutex // one request at a time
	logs *logBuffer
	done chan struct{}
}

// startML starts a microlink node in namespace ns and waits until it is
// connected to the lab.
func startML(t *testing.T, l *lab.Lab, ns, hostname string) *mlNode {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	m := &mlNode{Hostname: hostname, NS: ns, logs: &logBuffer{}, done: make(chan struct{})}
	m.cmd = exec.Command("ip", "netns", "exec", ns, self)
	m.cmd.Env = append(os.Environ(),
		envHelper+"=1",
		envControl+"="+l.ControlURL,
		envAuthKey+"="+l.AuthKey,
		envHostname+"="+hostname,
		envStateDir+"="+t.TempDir(),
	)
	m.cmd.Stderr = m.logs
	m.in, err = m.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := m.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	m.out = bufio.NewScanner(stdout)
	m.out.Buffer(nil, 1<<20)
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var waitErr error
	go func() { waitErr = m.cmd.Wait(); close(m.done) }()
	t.Cleanup(func() {
		m.in.Close()
		select {
		case <-m.done:
			// With -race, a data race in the node makes it exit non-zero.
			if waitErr != nil || strings.Contains(m.logs.String(), "DATA RACE") {
				t.Errorf("microlink %s exited badly: %v", hostname, waitErr)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("microlink %s did not stop within 10 s of its stdin closing", hostname)
			m.cmd.Process.Kill()
			<-m.done
		}
		if t.Failed() {
			t.Logf("log of microlink %s:\n%s", hostname, tail(m.logs.String(), 300))
		}
	})
	rep, err := m.read(45 * time.Second)
	if err != nil {
		t.Fatalf("microlink %s did not start: %v\n%s", hostname, err, m.logs.String())
	}
	m.IPv4, m.NodeKey = rep.IPv4, rep.NodeKey
	return m
}

// read waits up to d for the helper's next reply.
func (m *mlNode) read(d time.Duration) (helperReply, error) {
	type result struct {
		rep helperReply
		err error
	}
	ch := make(chan result, 1)
	go func() {
		var r result
		if !m.out.Scan() {
			r.err = fmt.Errorf("helper exited: %v", m.out.Err())
		} else {
			r.err = json.Unmarshal(m.out.Bytes(), &r.rep)
		}
		ch <- r
	}()
	select {
	case r := <-ch:
		return r.rep, r.err
	case <-time.After(d):
		m.cmd.Process.Kill() // the reader goroutine ends with the pipe
		return helperReply{}, fmt.Errorf("no reply within %v", d)
	}
}

func (m *mlNode) call(req helperRequest) (helperReply, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, _ := json.Marshal(req)
	if _, err := m.in.Write(append(b, '\n')); err != nil {
		return helperReply{}, err
	}
	rep, err := m.read(15 * time.Second)
	if err == nil && rep.Err != "" {
		err = errors.New(rep.Err)
	}
	return rep, err
}

// Peer returns the node's view of the peer with the given name.
func (m *mlNode) Peer(t *testing.T, name string) (microlink.Peer, bool) {
	t.Helper()
	rep, err := m.call(helperRequest{Op: "status"})
	if err != nil {
		t.Fatalf("microlink %s status: %v", m.Hostname, err)
	}
	for _, p := range rep.Peers {
		if p.Name == name {
			return p, true
		}
	}
	return microlink.Peer{}, false
}

// Ping pings target from the node.
func (m *mlNode) Ping(target, typ string) (microlink.PingResult, error) {
	rep, err := m.call(helperRequest{Op: "ping", Target: target, Type: typ})
	if err != nil {
		return microlink.PingResult{}, err
	}
	return *rep.Ping, nil
}

// Stats returns the node's counters.
func (m *mlNode) Stats(t *testing.T) microlink.Stats {
	t.Helper()
	rep, err := m.call(helperRequest{Op: "stats"})
	if err != nil || rep.Stats == nil {
		t.Fatalf("microlink %s stats: %v", m.Hostname, err)
	}
	return *rep.Stats
}

// Arrivals returns the stream datagrams that reached the node's echo port
// since t.
func (m *mlNode) Arrivals(t *testing.T, since time.Time) []arrival {
	t.Helper()
	rep, err := m.call(helperRequest{Op: "arrivals", Since: since.UnixNano()})
	if err != nil {
		t.Fatalf("microlink %s arrivals: %v", m.Hostname, err)
	}
	return rep.Arrivals
}

// Logs returns what the node has logged so far.
func (m *mlNode) Logs() string { return m.logs.String() }

// logBuffer collects a subprocess's output.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Len returns how many bytes were written so far, to mark a point in
// the log.
func (b *logBuffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Len()
}

// since returns what was logged after mark.
func (b *logBuffer) since(mark int) string {
	s := b.String()
	if mark > len(s) {
		return ""
	}
	return s[mark:]
}
