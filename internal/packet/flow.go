package packet

import (
	"net/netip"
	"sync"
)

// maxFlows bounds the number of outbound flows a Filter remembers.
const maxFlows = 512

// flow identifies the packets of one direction of a UDP or SCTP flow.
type flow struct {
	proto    Proto
	src, dst netip.AddrPort
}

// flowOf returns the flow of the inbound packet p.
func flowOf(p *Parsed) flow {
	return flow{proto: p.Proto, src: p.SrcAddrPort(), dst: p.DstAddrPort()}
}

// flowCache is a bounded set of flows that forgets the least recently
// used one when full. Its entries form a doubly linked list through
// indexes into ents, most recent first. It grows with the flows it holds
// rather than being made at its full size: most nodes never open more
// than a few flows, and a map sized for max entries costs tens of KiB.
type flowCache struct {
	mu         sync.Mutex
	max        int
	index      map[flow]int32
	ents       []flowEnt
	head, tail int32
}

type flowEnt struct {
	f          flow
	prev, next int32
}

func newFlowCache(n int) *flowCache {
	return &flowCache{
		max:   n,
		index: make(map[flow]int32),
		head:  -1,
		tail:  -1,
	}
}

// has reports whether f is in the cache and marks it recently used.
func (c *flowCache) has(f flow) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	i, ok := c.index[f]
	if ok {
		c.toFront(i)
	}
	return ok
}

// add puts f in the cache, evicting the least recently used flow if full.
func (c *flowCache) add(f flow) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if i, ok := c.index[f]; ok {
		c.toFront(i)
		return
	}
	var i int32
	if len(c.ents) < c.max {
		i = int32(len(c.ents))
		c.ents = append(c.ents, flowEnt{prev: -1, next: -1})
	} else {
		i = c.tail
		c.unlink(i)
		delete(c.index, c.ents[i].f)
	}
	c.ents[i].f = f
	c.index[f] = i
	c.pushFront(i)
}

func (c *flowCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.index)
}

func (c *flowCache) toFront(i int32) {
	if c.head == i {
		return
	}
	c.unlink(i)
	c.pushFront(i)
}

func (c *flowCache) unlink(i int32) {
	e := &c.ents[i]
	if e.prev >= 0 {
		c.ents[e.prev].next = e.next
	} else {
		c.head = e.next
	}
	if e.next >= 0 {
		c.ents[e.next].prev = e.prev
	} else {
		c.tail = e.prev
	}
	e.prev, e.next = -1, -1
}

func (c *flowCache) pushFront(i int32) {
	e := &c.ents[i]
	e.prev, e.next = -1, c.head
	if c.head >= 0 {
		c.ents[c.head].prev = i
	}
	c.head = i
	if c.tail < 0 {
		c.tail = i
	}
}
