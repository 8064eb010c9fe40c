package tunnel

// MaxPacket is the largest IP packet the stack builds or accepts: Tailscale's
// default tunnel MTU.
const MaxPacket = 1280

// bufPool is a bounded free list of packet buffers. Get allocates only when
// the list is empty; Put drops buffers beyond the bound, so the pool never
// holds more than its capacity however bursty the traffic.
type bufPool struct {
	free chan *[]byte
	size int
}

func newBufPool(n, size int) *bufPool {
	return &bufPool{free: make(chan *[]byte, n), size: size}
}

func (p *bufPool) Get() *[]byte {
	select {
	case b := <-p.free:
		*b = (*b)[:p.size]
		return b
	default:
		b := make([]byte, p.size)
		return &b
	}
}

func (p *bufPool) Put(b *[]byte) {
	select {
	case p.free <- b:
	default:
	}
}
