package tcp

import (
	"math/rand/v2"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/microlink-go/microlink/internal/packet"
)

var (
	addrA4 = netip.MustParseAddr("100.64.0.1")
	addrB4 = netip.MustParseAddr("100.64.0.2")
	addrA6 = netip.MustParseAddr("fd7a:115c:a1e0::1")
	addrB6 = netip.MustParseAddr("fd7a:115c:a1e0::2")
)

// impairments are what a link does to the packets it carries.
type impairments struct {
	loss, dup     float64       // probabilities
	delay, jitter time.Duration // each packet waits delay plus up to jitter: reordering
}

// link carries packets between stacks in one process, impaired. Each
// packet is delivered from a timer of its own; Close waits for all.
type link struct {
	mu     sync.Mutex
	imp    impairments
	rng    *rand.Rand
	stacks map[netip.Addr]*Stack
	closed bool
	wg     sync.WaitGroup
	sent   int
}

func newLink(imp impairments) *link {
	return &link{imp: imp, rng: rand.New(rand.NewPCG(1, 2)), stacks: map[netip.Addr]*Stack{}}
}

func (l *link) setImpairments(imp impairments) {
	l.mu.Lock()
	l.imp = imp
	l.mu.Unlock()
}

func (l *link) output(pkt []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.sent++
	copies := 1
	if l.rng.Float64() < l.imp.loss {
		copies = 0
	} else if l.rng.Float64() < l.imp.dup {
		copies = 2
	}
	for range copies {
		d := l.imp.delay
		if l.imp.jitter > 0 {
			d += time.Duration(l.rng.Int64N(int64(l.imp.jitter)))
		}
		p := append([]byte(nil), pkt...)
		l.wg.Add(1)
		time.AfterFunc(d, func() {
			defer l.wg.Done()
			l.deliver(p)
		})
	}
	return nil
}

func (l *link) deliver(pkt []byte) {
	var p packet.Parsed
	if p.Decode(pkt) != nil || p.Proto != packet.ProtoTCP {
		return
	}
	l.mu.Lock()
	s, closed := l.stacks[p.Dst], l.closed
	l.mu.Unlock()
	if s != nil && !closed {
		s.Inbound(p.Src, p.Dst, p.Transport())
	}
}

func (l *link) close() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	l.wg.Wait()
}

// pair returns stacks A and B joined by a link with imp, and closes all
// at the end of the test.
func pair(t testing.TB, cfg Config, imp impairments) (a, b *Stack, l *link) {
	t.Helper()
	l = newLink(imp)
	cfg.Output = l.output
	a, b = New(cfg), New(cfg)
	l.stacks[addrA4], l.stacks[addrA6] = a, a
	l.stacks[addrB4], l.stacks[addrB6] = b, b
	t.Cleanup(func() { a.Close(); b.Close(); l.close() })
	return a, b, l
}

// directPair returns stacks joined without a timer per packet: a packet
// is delivered by whichever Output call finds the link idle, after the
// packets queued before it, so that delivery neither recurses nor
// reorders. Used for allocation counts and benchmarks. An Output set in
// cfg sees every packet before the link takes it.
func directPair(t testing.TB, cfg Config) (a, b *Stack) {
	t.Helper()
	d := &directLink{stacks: map[netip.Addr]*Stack{}}
	if tap := cfg.Output; tap != nil {
		cfg.Output = func(p []byte) error {
			tap(p)
			return d.output(p)
		}
	} else {
		cfg.Output = d.output
	}
	a, b = New(cfg), New(cfg)
	d.stacks[addrA4], d.stacks[addrB4] = a, b
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

type directLink struct {
	mu     sync.Mutex
	stacks map[netip.Addr]*Stack
	queue  []*[]byte
	free   []*[]byte
	busy   bool
}

func (d *directLink) output(pkt []byte) error {
	d.mu.Lock()
	var bp *[]byte
	if n := len(d.free); n > 0 {
		bp, d.free = d.free[n-1], d.free[:n-1]
	} else {
		b := make([]byte, 0, 1500)
		bp = &b
	}
	*bp = append((*bp)[:0], pkt...)
	d.queue = append(d.queue, bp)
	if d.busy {
		d.mu.Unlock()
		return nil
	}
	d.busy = true
	for len(d.queue) > 0 {
		bp := d.queue[0]
		copy(d.queue, d.queue[1:])
		d.queue = d.queue[:len(d.queue)-1]
		d.mu.Unlock()
		var p packet.Parsed
		if p.Decode(*bp) == nil {
			if s := d.stacks[p.Dst]; s != nil {
				s.Inbound(p.Src, p.Dst, p.Transport())
			}
		}
		d.mu.Lock()
		d.free = append(d.free, bp)
	}
	d.busy = false
	d.mu.Unlock()
	return nil
}

// checkGoroutines fails t if the number of goroutines does not come back
// to base within a few seconds.
func checkGoroutines(t *testing.T, base int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines, want %d:\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}
