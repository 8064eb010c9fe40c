package wireguard

// buffer holds one outbound transport message.
type buffer struct {
	b [bufferSize]byte
}

// bufferPool keeps up to poolSize idle buffers. Get allocates when the
// pool is empty and Put drops buffers when it is full, so a burst costs
// allocations but the memory held at rest stays bounded.
type bufferPool struct {
	c chan *buffer
}

func newBufferPool() bufferPool {
	return bufferPool{c: make(chan *buffer, poolSize)}
}

func (p bufferPool) get() *buffer {
	select {
	case b := <-p.c:
		return b
	default:
		return new(buffer)
	}
}

func (p bufferPool) put(b *buffer) {
	select {
	case p.c <- b:
	default:
	}
}
