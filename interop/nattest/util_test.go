package nattest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microlink-go/microlink/interop/lab"
	"tailscale.com/types/key"
)

// waitFor polls cond every 100 ms until it is true or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func contains(out []byte, s string) bool { return strings.Contains(string(out), s) }

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func logf(b *logBuffer, format string, args ...any) {
	fmt.Fprintf(b, time.Now().Format("15:04:05.000 ")+format+"\n", args...)
}

// streamDatagramLen is the size of a stream datagram: a big-endian
// sequence number and padding.
const streamDatagramLen = 200

// stream sends a numbered datagram every interval from an OS socket to
// microlink's echo port and records when each echo comes back.
type stream struct {
	sock     *net.UDPConn
	dst      netip.AddrPort
	interval time.Duration
	done     chan struct{}
	wg       sync.WaitGroup

	mu     sync.Mutex
	sentAt []time.Time // by sequence number
	echoes []echo      // in arrival order
}

type echo struct {
	seq        int
	sent, recv time.Time
}

func startStream(t *testing.T, sock *net.UDPConn, dst netip.AddrPort, interval time.Duration) *stream {
	s := &stream{sock: sock, dst: dst, interval: interval, done: make(chan struct{})}
	s.wg.Add(2)
	go s.send()
	go s.receive()
	t.Cleanup(func() { s.stop() })
	return s
}

func (s *stream) send() {
	defer s.wg.Done()
	tick := time.NewTicker(s.interval)
	defer tick.Stop()
	buf := make([]byte, streamDatagramLen)
	for {
		s.mu.Lock()
		seq := len(s.sentAt)
		s.sentAt = append(s.sentAt, time.Now())
		s.mu.Unlock()
		binary.BigEndian.PutUint64(buf, uint64(seq))
		s.sock.WriteToUDPAddrPort(buf, s.dst)
		select {
		case <-s.done:
			return
		case <-tick.C:
		}
	}
}

func (s *stream) receive() {
	defer s.wg.Done()
	buf := make([]byte, 2048)
	for {
		s.sock.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		n, from, err := s.sock.ReadFromUDPAddrPort(buf)
		now := time.Now()
		select {
		case <-s.done:
			return
		default:
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			continue
		}
		if err != nil {
			return
		}
		if n != streamDatagramLen || from != s.dst {
			continue
		}
		seq := int(binary.BigEndian.Uint64(buf))
		s.mu.Lock()
		if seq < len(s.sentAt) {
			s.echoes = append(s.echoes, echo{seq: seq, sent: s.sentAt[seq], recv: now})
		}
		s.mu.Unlock()
	}
}

// stop ends the stream and returns how many datagrams were sent, how many
// distinct ones came back and the longest time without an echo.
func (s *stream) stop() (sent, echoed int, longestGap time.Duration) {
	select {
	case <-s.done:
	default:
		close(s.done)
	}
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := map[int]bool{}
	for _, e := range s.echoes {
		seen[e.seq] = true
	}
	return len(s.sentAt), len(seen), s.longestGapLocked()
}

// longestGapLocked returns the longest time between consecutive echoes.
func (s *stream) longestGapLocked() time.Duration {
	var gap time.Duration
	for i := 1; i < len(s.echoes); i++ {
		gap = max(gap, s.echoes[i].recv.Sub(s.echoes[i-1].recv))
	}
	return gap
}

// around returns the last echo arriving before t and the first echo of a
// datagram sent after t.
func (s *stream) around(t time.Time) (lastBefore, firstAfter time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.echoes {
		if e.recv.Before(t) {
			lastBefore = e.recv
		}
		if e.sent.After(t) && (firstAfter.IsZero() || e.recv.Before(firstAfter)) {
			firstAfter = e.recv
		}
	}
	return
}

// sentAfter returns the first sequence number sent after t, and when.
func (s *stream) sentAfter(t time.Time) (int, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for seq, at := range s.sentAt {
		if at.After(t) {
			return seq, at
		}
	}
	return len(s.sentAt), time.Time{}
}

// echoedSince reports how many echoes of datagrams sent after t arrived.
func (s *stream) echoedSince(t time.Time) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, e := range s.echoes {
		if e.sent.After(t) {
			n++
		}
	}
	return n
}

// gapSince returns the number of echoes arriving after t and the longest
// time without one from t until now.
func (s *stream) gapSince(t time.Time) (n int, longest time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := t
	for _, e := range s.echoes {
		if e.recv.Before(t) {
			continue
		}
		n++
		longest = max(longest, e.recv.Sub(prev))
		prev = e.recv
	}
	return n, max(longest, time.Since(prev))
}

// writeBench appends v as one line of JSON to name in
// $MICROLINK_BENCH_OUT, if set, for scripts/bench.sh.
func writeBench(t *testing.T, name string, v any) {
	t.Helper()
	lab.WriteBench(t, name, v)
}

// controlHasEndpoint reports whether control lists an endpoint of the node
// with key k at addr.
func controlHasEndpoint(l *lab.Lab, k key.NodePublic, addr netip.Addr) bool {
	n := l.Control.Node(k)
	if n == nil {
		return false
	}
	for _, ep := range n.Endpoints {
		if ep.Addr() == addr {
			return true
		}
	}
	return false
}
