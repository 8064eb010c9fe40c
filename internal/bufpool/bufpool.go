// Package bufpool is a bounded free list of packet buffers, shared by the
// node's userspace IP endpoint and its TCP.
package bufpool

// Pool holds up to n idle buffers of one size. Get allocates only when the
// list is empty and Put drops buffers beyond the bound, so the memory held
// at rest stays bounded however bursty the traffic. It is safe for
// concurrent use.
type Pool struct {
	free chan *[]byte
	size int
}

// New returns a Pool of at most n idle buffers of size bytes.
func New(n, size int) *Pool {
	return &Pool{free: make(chan *[]byte, n), size: size}
}

// Get returns a buffer of the pool's size.
func (p *Pool) Get() *[]byte {
	select {
	case b := <-p.free:
		*b = (*b)[:p.size]
		return b
	default:
		b := make([]byte, p.size)
		return &b
	}
}

// Put returns b to the pool, or drops it if the pool is full.
func (p *Pool) Put(b *[]byte) {
	select {
	case p.free <- b:
	default:
	}
}
