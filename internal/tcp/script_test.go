package tcp

import (
	"container/heap"
	"encoding/binary"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/microlink-go/microlink/internal/packet"
)

// scriptedPacket is what a script sees of a packet on a scripted line.
type scriptedPacket struct {
	src   netip.Addr
	seq   uint32
	data  int // payload bytes
	flags packet.TCPFlags
	sent  int       // how many times a segment with this src and seq went out, this one included
	at    time.Time // when the line took it; it arrives after delay and its lateness
}

// scriptLine carries packets between two stacks with a fixed delay, in
// the order of their delivery times; a script decides for each packet
// whether it is lost and how much later than the others it arrives.
type scriptLine struct {
	delay  time.Duration
	script func(p scriptedPacket) (drop bool, late time.Duration)
	stacks map[netip.Addr]*Stack

	mu     sync.Mutex
	cond   *sync.Cond
	q      timedHeap
	n      int // packets queued, for FIFO order among equal times
	sent   map[[2]uint32]int
	closed bool
	done   chan struct{}
}

type timedPkt struct {
	at  time.Time
	n   int
	pkt []byte
}

type timedHeap []timedPkt

func (h timedHeap) Len() int { return len(h) }
func (h timedHeap) Less(i, j int) bool {
	return h[i].at.Before(h[j].at) || h[i].at.Equal(h[j].at) && h[i].n < h[j].n
}
func (h timedHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *timedHeap) Push(x any)   { *h = append(*h, x.(timedPkt)) }
func (h *timedHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// scriptPair returns stacks A (addrA4) and B (addrB4) on a scripted line.
func scriptPair(t *testing.T, cfg Config, delay time.Duration, script func(scriptedPacket) (bool, time.Duration)) (a, b *Stack, l *scriptLine) {
	t.Helper()
	l = &scriptLine{delay: delay, script: script, stacks: map[netip.Addr]*Stack{}, sent: map[[2]uint32]int{}, done: make(chan struct{})}
	l.cond = sync.NewCond(&l.mu)
	cfg.Output = l.output
	a, b = New(cfg), New(cfg)
	l.stacks[addrA4], l.stacks[addrB4] = a, b
	go l.run()
	t.Cleanup(func() { a.Close(); b.Close(); l.close() })
	return a, b, l
}

func (l *scriptLine) output(pkt []byte) error {
	var p packet.Parsed
	if p.Decode(pkt) != nil || p.Proto != packet.ProtoTCP {
		return nil
	}
	seg := p.Transport()
	sp := scriptedPacket{
		src:   p.Src,
		seq:   binary.BigEndian.Uint32(seg[4:8]),
		data:  len(seg) - int(seg[12]>>4)*4,
		flags: packet.TCPFlags(seg[13]),
		at:    time.Now(),
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	if sp.data > 0 || sp.flags&(flagSYN|flagFIN) != 0 {
		k := [2]uint32{uint32(p.Src.As4()[3]), sp.seq}
		l.sent[k]++
		sp.sent = l.sent[k]
	}
	drop, late := l.script(sp)
	if drop {
		return nil
	}
	l.n++
	heap.Push(&l.q, timedPkt{sp.at.Add(l.delay + late), l.n, append([]byte(nil), pkt...)})
	l.cond.Signal()
	return nil
}

func (l *scriptLine) run() {
	defer close(l.done)
	l.mu.Lock()
	for {
		for len(l.q) == 0 && !l.closed {
			l.cond.Wait()
		}
		if l.closed {
			l.mu.Unlock()
			return
		}
		next := l.q[0]
		if d := time.Until(next.at); d > 0 {
			// Wait, but wake for a packet that is due earlier.
			l.mu.Unlock()
			time.Sleep(min(d, time.Millisecond))
			l.mu.Lock()
			continue
		}
		heap.Pop(&l.q)
		l.mu.Unlock()
		var p packet.Parsed
		if p.Decode(next.pkt) == nil {
			if s := l.stacks[p.Dst]; s != nil {
				s.Inbound(p.Src, p.Dst, p.Transport())
			}
		}
		l.mu.Lock()
	}
}

func (l *scriptLine) close() {
	l.mu.Lock()
	l.closed = true
	l.cond.Signal()
	l.mu.Unlock()
	<-l.done
}
