package tcp

// bufPool is a bounded free list of packet buffers: Get allocates only
// when the list is empty and Put drops buffers beyond the bound.
type bufPool struct {
	free chan *[]byte
	size int
}

func newBufPool(n, size int) *bufPool {
	return &bufPool{free: make(chan *[]byte, n), size: size}
}

func (p *bufPool) get() *[]byte {
	select {
	case b := <-p.free:
		*b = (*b)[:p.size]
		return b
	default:
		b := make([]byte, p.size)
		return &b
	}
}

func (p *bufPool) put(b *[]byte) {
	select {
	case p.free <- b:
	default:
	}
}
