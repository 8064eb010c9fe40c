package tcp

// ring is a fixed-size byte ring buffer holding n bytes from head.
// Bytes past the n held may be written ahead with writeAt and taken in
// later with extend, which is how out-of-order data waits for the gap
// before it to fill.
type ring struct {
	buf     []byte
	head, n int
}

func newRing(size int) ring { return ring{buf: make([]byte, size)} }

func (r *ring) size() int { return len(r.buf) }
func (r *ring) free() int { return len(r.buf) - r.n }

// write appends as much of p as fits and returns how much that was.
func (r *ring) write(p []byte) int {
	n := min(len(p), r.free())
	r.writeAt(r.n, p[:n])
	r.n += n
	return n
}

// writeAt copies p to offset off from head; off+len(p) must not exceed
// the size.
func (r *ring) writeAt(off int, p []byte) {
	if len(p) == 0 {
		return
	}
	i := (r.head + off) % len(r.buf)
	k := copy(r.buf[i:], p)
	copy(r.buf, p[k:])
}

// extend takes n bytes written ahead into the held bytes.
func (r *ring) extend(n int) { r.n += n }

// peek returns the n bytes at offset off as one or two slices.
func (r *ring) peek(off, n int) (a, b []byte) {
	if n == 0 {
		return nil, nil
	}
	i := (r.head + off) % len(r.buf)
	if i+n <= len(r.buf) {
		return r.buf[i : i+n], nil
	}
	return r.buf[i:], r.buf[:n-(len(r.buf)-i)]
}

// read moves up to len(p) bytes from the head into p.
func (r *ring) read(p []byte) int {
	n := min(len(p), r.n)
	a, b := r.peek(0, n)
	copy(p, a)
	copy(p[len(a):], b)
	r.discard(n)
	return n
}

// discard drops n bytes from the head.
func (r *ring) discard(n int) {
	if n <= 0 {
		return
	}
	// head moves on even when the ring empties: data written ahead
	// stays where writeAt put it.
	r.n -= n
	r.head = (r.head + n) % len(r.buf)
}
