package tcp

import "time"

// TIME-WAIT (RFC 9293, section 3.6) is kept outside the connection table:
// a closed connection leaves only its four-tuple and sequence numbers
// here, so that a retransmitted FIN of the peer is acknowledged and the
// tuple is not reused by Dial too soon, while its connection slot and its
// memory are free at once. WireGuard's replay window already drops old
// duplicates of packets, so TIME-WAIT need not last 2 MSL.

// timeWait is one four-tuple in TIME-WAIT.
type timeWait struct {
	sndNxt, rcvNxt uint32
	until          int64 // stack clock
}

// twExpiry is a tuple in the order it entered TIME-WAIT.
type twExpiry struct {
	id    connID
	until int64
}

// timeWaits holds the tuples in TIME-WAIT. Guarded by the stack's mu.
type timeWaits struct {
	s     *Stack
	m     map[connID]timeWait
	fifo  []twExpiry // in order of expiry; entries not in m are stale
	timer *time.Timer
	armed bool
}

func (t *timeWaits) init(s *Stack) {
	t.s = s
	t.m = map[connID]timeWait{}
	t.timer = time.AfterFunc(time.Hour, t.expire)
	t.timer.Stop()
}

// max is how many tuples are kept.
func (t *timeWaits) max() int { return 4 * t.s.cfg.MaxConns }

// add puts id into TIME-WAIT, dropping the oldest tuple if full.
func (t *timeWaits) add(id connID, sndNxt, rcvNxt uint32) {
	if t.s.closed {
		return
	}
	for len(t.m) >= t.max() && len(t.fifo) > 0 {
		t.pop()
	}
	until := t.s.now() + int64(t.s.cfg.TimeWait)
	t.m[id] = timeWait{sndNxt: sndNxt, rcvNxt: rcvNxt, until: until}
	t.fifo = append(t.fifo, twExpiry{id, until})
	if !t.armed {
		t.armed = true
		t.timer.Reset(t.s.cfg.TimeWait)
	}
}

// pop removes the oldest entry of the queue, and its tuple unless it was
// put into TIME-WAIT again since.
func (t *timeWaits) pop() {
	e := t.fifo[0]
	t.fifo[0] = twExpiry{}
	t.fifo = t.fifo[1:]
	if w, ok := t.m[e.id]; ok && w.until == e.until {
		delete(t.m, e.id)
	}
	if len(t.fifo) == 0 {
		t.fifo = nil // let the backing array go
	}
}

func (t *timeWaits) has(id connID) bool {
	_, ok := t.m[id]
	return ok
}

func (t *timeWaits) remove(id connID) { delete(t.m, id) }

// expire runs on the timer: it drops the tuples whose time is up.
func (t *timeWaits) expire() {
	s := t.s
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for len(t.fifo) > 0 && t.fifo[0].until <= now {
		t.pop()
	}
	t.armed = len(t.fifo) > 0 && !s.closed
	if t.armed {
		t.timer.Reset(time.Duration(t.fifo[0].until - now))
	}
}

func (t *timeWaits) close() {
	t.timer.Stop()
	t.armed = false
	t.m = map[connID]timeWait{}
	t.fifo = nil
}

// input handles a segment for a tuple in TIME-WAIT and reports whether
// it did; a new SYN beyond the old connection's sequence numbers ends
// TIME-WAIT and is left to the listener. If ack is true, the segment is
// answered with an ACK built from reply. Called with s.mu held.
func (t *timeWaits) input(id connID, sg *segment) (handled, ack bool, reply header) {
	w, ok := t.m[id]
	if !ok {
		return false, false, reply
	}
	switch {
	case sg.has(flagRST):
		delete(t.m, id)
		return true, false, reply
	case sg.has(flagSYN) && !sg.has(flagACK) && seqGT(sg.seq, w.rcvNxt):
		delete(t.m, id)
		return false, false, reply
	case sg.has(flagFIN) || len(sg.payload) > 0 || sg.has(flagSYN):
		// The peer did not get our last ACK: send it again.
		reply = header{src: id.local, dst: id.remote, seq: w.sndNxt, ack: w.rcvNxt, flags: flagACK, wscale: -1}
		return true, true, reply
	}
	return true, false, reply
}
