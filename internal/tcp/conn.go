package tcp

import (
	"crypto/rand"
	"encoding/binary"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// state is a connection state of RFC 9293.
type state uint8

const (
	stateClosed state = iota
	stateSynSent
	stateSynReceived
	stateEstablished
	stateFinWait1
	stateFinWait2
	stateCloseWait
	stateClosing
	stateLastAck
	stateTimeWait
)

var stateNames = [...]string{"CLOSED", "SYN-SENT", "SYN-RECEIVED", "ESTABLISHED", "FIN-WAIT-1", "FIN-WAIT-2", "CLOSE-WAIT", "CLOSING", "LAST-ACK", "TIME-WAIT"}

func (s state) String() string { return stateNames[s] }

// maxRanges bounds the out-of-order byte ranges a connection keeps;
// segments that would need more are dropped.
const maxRanges = 16

// seqRange is the sequence numbers [start, end).
type seqRange struct{ start, end uint32 }

// Conn is a TCP connection. It implements net.Conn.
type Conn struct {
	s  *Stack
	id connID

	mu               sync.Mutex
	rcvCond, sndCond sync.Cond // readers; writers and Dial
	state            state
	err              error // why the connection failed
	listener         *Listener
	halfOpen         bool // counted in the stack's half-open connections
	inbound          bool // counted in the stack's connections from peers
	userClosed       bool // Close was called
	writeClosed      bool // Close or CloseWrite was called
	budgeted         bool // the buffer limits are taken from the stack's budget
	synAt            int64

	// Send side. sndBuf holds the unacknowledged and unsent data, whose
	// first byte has sequence number bufSeq; sndNxt is the next new
	// sequence number. sent records what is in flight (sent.go).
	iss, sndUna, sndNxt uint32
	sndWnd              uint32
	sndWl1, sndWl2      uint32
	sndBuf              buffer
	sndLimit            int
	bufSeq              uint32
	finQueued           bool
	mss                 int
	sndShift            uint8
	offerWScale         bool
	sackOK              bool // the peer takes SACK blocks

	sent                           sentQueue
	sackedOut, lostOut, retransOut int // bytes, for pipe
	sackedSegs                     int
	rxtHint                        int // no segment below it is due for retransmission
	highSACK                       uint32

	// Congestion control (cc.go, cubic.go, recovery.go), RTT and
	// retransmission timer (rtt.go), RACK and TLP (rack.go), pacing.
	cwnd, ssthresh int
	cc             ccState
	hs             hystart
	recov          recovery
	dupAcks        int
	cwndLimited    uint32 // sndNxt when the congestion window last held data back
	maxPipe        int    // the largest pipe of this round trip and the last
	lastMaxPipe    int
	roundEnd       uint32 // sndNxt when this round trip began
	srtt, rttvar   time.Duration
	rto, minRTT    time.Duration
	minRTTAt       int64
	backoff        int
	rxtStart       int64 // first retransmission without progress since, for RetransmitTimeout
	rack           rackState
	tlp            tlpState
	paceNext       int64 // when pacing lets the next segment go (cc.go)
	paceChunk      int64 // how much later the pacing timer fires, to release a chunk
	lastSend       int64
	probes         int // zero-window probes sent since the window closed

	// Receive side. rcvBuf holds data not yet read; out-of-order data
	// waits in it at the offsets its ranges give.
	irs, rcvNxt  uint32
	rcvBuf       buffer
	rcvLimit     int
	ooo          [maxRanges]seqRange // most recently extended first
	nooo         int
	dsack        seqRange // a duplicate to report in the next ACK
	dsackPending bool
	finRcvd      bool
	oooFin       bool // a FIN at oooFinSeq arrived before the data up to it
	oooFinSeq    uint32
	unacked      int    // data segments received and not yet acknowledged
	ackNow       bool   // acknowledge at the end of this segment's input
	quickAck     bool   // acknowledge with a bare ACK before sending data
	advEdge      uint32 // right edge of the window last advertised
	advWnd       int    // the window last advertised, from the rcvNxt then

	// Receive autotuning (autotune.go).
	rcvRTT, rcvRTTTime int64
	rcvRTTSeq          uint32
	rcvSpace           int
	copied             int64 // bytes the application read
	rcvSpaceMark       int64
	rcvSpaceTime       int64
	lastData           int64

	lastAckLimited int64 // see sendAckLimited

	// Keep-alive (RFC 9293, section 3.8.4): probes go out at kaAt once
	// the peer has been silent for kaIdle (zero: off).
	kaIdle, kaInterval time.Duration
	kaAt, lastRecv     int64
	kaProbes           int

	// One timer serves every deadline (timer.go); timerAt is when it is
	// set to fire, 0 if stopped. Deadlines are stack clock times, 0 for
	// none.
	timer                               *time.Timer
	timerAt                             int64
	rtoAt, delackAt, closeAt, persistAt int64
	paceAt                              int64
	rdl, wdl                            deadline
	pending, spare                      []*[]byte // packets to send once mu is released
	flushing                            bool      // a caller of unlock is sending pending
}

// deadline is a read or write deadline with its timer.
type deadline struct {
	t       *time.Timer
	gen     int
	expired bool
}

func (s *Stack) newConn(id connID) *Conn {
	var r [4]byte
	rand.Read(r[:])
	iss := binary.BigEndian.Uint32(r[:])
	if s.iss != nil {
		iss = s.iss()
	}
	c := &Conn{
		s:        s,
		id:       id,
		iss:      iss,
		mss:      536,
		rto:      time.Second,
		ssthresh: 1 << 30,
		sndLimit: s.initialBuffer(s.cfg.SendBuffer),
		rcvLimit: s.initialBuffer(s.cfg.ReceiveBuffer),
		synAt:    s.now(),
	}
	c.rcvCond.L = &c.mu
	c.sndCond.L = &c.mu
	c.sndUna, c.sndNxt = c.iss, c.iss
	c.bufSeq = c.iss + 1
	c.rcvSpace = c.initialRcvSpace()
	if s.cfg.KeepAliveIdle > 0 {
		c.kaIdle, c.kaInterval = s.cfg.KeepAliveIdle, s.cfg.KeepAliveInterval
	}
	c.rack.reoWndMult = 1
	c.timer = time.AfterFunc(time.Hour, c.onTimer)
	c.timer.Stop()
	return c
}

// wake wakes every blocked reader, writer and Dial.
func (c *Conn) wake() {
	c.rcvCond.Broadcast()
	c.sndCond.Broadcast()
}

// unlock sends the packets built while mu was held, then releases mu.
// Packets are sent without the lock so that Output may take its time and
// a peer stack in the same process may answer synchronously. One caller
// at a time sends; packets queued meanwhile, by it or by others, go out
// in its loop, in order, so sending never recurses.
func (c *Conn) unlock() {
	if c.flushing {
		c.mu.Unlock()
		return
	}
	c.flushing = true
	for len(c.pending) > 0 {
		q := c.pending
		c.pending, c.spare = c.spare[:0], nil
		c.mu.Unlock()
		var held Corker
		if len(q) > 1 && c.s.cfg.Batch != nil {
			if held = c.s.cfg.Batch(); held != nil {
				held.Cork()
			}
		}
		for i, bp := range q {
			c.s.output(bp)
			q[i] = nil
		}
		if held != nil {
			held.Uncork()
		}
		c.mu.Lock()
		c.spare = q[:0]
	}
	c.flushing = false
	c.mu.Unlock()
}

// wait sends pending packets or, if there are none to send, waits on
// cond. mu must be held; the caller looks at the state again after.
func (c *Conn) wait(cond *sync.Cond) {
	if len(c.pending) > 0 && !c.flushing {
		c.unlock()
		c.mu.Lock()
		return
	}
	cond.Wait()
}

// Read reads received data. It returns io.EOF after the peer's FIN.
func (c *Conn) Read(b []byte) (int, error) {
	c.mu.Lock()
	for {
		switch {
		case c.userClosed:
			c.unlock()
			return 0, c.opError("read", net.ErrClosed)
		case c.rcvBuf.n > 0:
			n := c.rcvBuf.read(b)
			c.consumed(n)
			c.unlock()
			return n, nil
		case len(b) == 0 && c.err == nil:
			c.unlock()
			return 0, nil
		case c.finRcvd:
			c.unlock()
			return 0, io.EOF
		case c.err != nil:
			err := c.err
			c.unlock()
			return 0, c.opError("read", err)
		case c.rdl.expired:
			c.unlock()
			return 0, c.opError("read", os.ErrDeadlineExceeded)
		}
		c.wait(&c.rcvCond)
	}
}

// Write queues b for sending, waiting while the send buffer is full. It
// returns once all of b is queued, not when it is acknowledged.
func (c *Conn) Write(b []byte) (int, error) {
	c.mu.Lock()
	total := 0
	for len(b) > 0 {
		var err error
		switch {
		case c.userClosed:
			err = net.ErrClosed
		case c.err != nil:
			err = c.err
		case c.writeClosed:
			err = errWriteClosed
		case c.wdl.expired:
			err = os.ErrDeadlineExceeded
		case c.state != stateEstablished && c.state != stateCloseWait:
			err = errWriteClosed
		}
		if err != nil {
			c.unlock()
			return total, c.opError("write", err)
		}
		if room := c.sndLimit - c.sndBuf.n; room > 0 {
			n := min(room, len(b))
			c.sndBuf.write(b[:n])
			total += n
			b = b[n:]
			c.trySend()
			c.armTimer()
			continue
		}
		c.wait(&c.sndCond)
	}
	c.unlock()
	return total, nil
}

var errWriteClosed = &errnoError{syscall.EPIPE, "write after the connection was shut down for writing"}

// Close closes the connection. Queued data is still sent, followed by a
// FIN; if received data was left unread, the peer gets a reset instead.
// Blocked reads and writes return net.ErrClosed.
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.userClosed {
		c.unlock()
		return nil
	}
	c.userClosed = true
	c.stopDeadlines()
	switch c.state {
	case stateSynSent, stateSynReceived:
		c.abort(net.ErrClosed)
	case stateEstablished, stateCloseWait:
		if c.rcvBuf.n > 0 {
			c.abort(ErrAborted)
			break
		}
		c.shutdownWrite()
	case stateFinWait2:
		c.closeAt = c.s.now() + int64(c.s.cfg.FinWait2Timeout)
	}
	c.writeClosed = true
	c.armTimer()
	c.wake()
	c.unlock()
	return nil
}

// CloseWrite sends a FIN after the queued data; reading goes on.
func (c *Conn) CloseWrite() error {
	c.mu.Lock()
	defer c.unlock()
	if c.userClosed {
		return c.opError("close", net.ErrClosed)
	}
	if c.state == stateEstablished || c.state == stateCloseWait {
		c.shutdownWrite()
		c.armTimer()
	}
	c.writeClosed = true
	c.wake()
	return nil
}

// shutdownWrite queues the FIN and moves to FIN-WAIT-1 or LAST-ACK.
func (c *Conn) shutdownWrite() {
	if c.writeClosed || c.finQueued {
		return
	}
	c.finQueued = true
	if c.state == stateEstablished {
		c.state = stateFinWait1
	} else {
		c.state = stateLastAck
	}
	c.trySend()
}

// abort resets the connection: it sends a RST if the peer may know it,
// then fails it with err.
func (c *Conn) abort(err error) {
	switch c.state {
	case stateClosed, stateTimeWait, stateSynSent:
	default:
		c.queueControl(flagRST|flagACK, c.sndNxt)
		c.s.resets.Add(1)
	}
	c.fail(err)
}

// fail ends the connection with err, forgets it and stops its timer.
func (c *Conn) fail(err error) {
	if c.err == nil {
		c.err = err
	}
	c.close()
}

// close moves to CLOSED and forgets the connection.
func (c *Conn) close() {
	if c.state == stateClosed {
		return
	}
	c.state = stateClosed
	c.timer.Stop()
	c.timerAt = 0
	c.rtoAt, c.delackAt, c.closeAt, c.persistAt, c.paceAt = 0, 0, 0, 0, 0
	c.rack.at, c.tlp.at = 0, 0
	c.releaseBuffers()
	c.s.remove(c)
	c.wake()
}

// SetKeepAlive turns keep-alive probes on or off for this connection.
// They are on by default, with the Stack's Config timings.
func (c *Conn) SetKeepAlive(on bool) error {
	c.mu.Lock()
	defer c.unlock()
	switch {
	case !on:
		c.kaIdle, c.kaAt = 0, 0
	case c.kaIdle == 0:
		c.kaIdle = max(c.s.cfg.KeepAliveIdle, time.Second)
		c.kaInterval = c.s.cfg.KeepAliveInterval
		c.startKeepAlive(c.s.now())
	}
	return nil
}

// SetKeepAlivePeriod sets both the idle time before the first probe and
// the time between probes, as net.TCPConn's method of that name does.
func (c *Conn) SetKeepAlivePeriod(d time.Duration) error {
	d = max(d, time.Second)
	c.mu.Lock()
	defer c.unlock()
	c.kaIdle, c.kaInterval = d, d
	c.kaAt = 0
	c.startKeepAlive(c.s.now())
	return nil
}

// LocalAddr returns the local address, a *net.TCPAddr.
func (c *Conn) LocalAddr() net.Addr { return net.TCPAddrFromAddrPort(c.id.local) }

// RemoteAddr returns the peer's address, a *net.TCPAddr.
func (c *Conn) RemoteAddr() net.Addr { return net.TCPAddrFromAddrPort(c.id.remote) }

// SetDeadline sets the read and write deadlines.
func (c *Conn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

// SetReadDeadline sets the deadline for Read, waking a blocked Read when
// it passes. The zero time means none.
func (c *Conn) SetReadDeadline(t time.Time) error {
	return c.setDeadline(&c.rdl, &c.rcvCond, t)
}

// SetWriteDeadline sets the deadline for Write. Data queued before it
// passes is still sent.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	return c.setDeadline(&c.wdl, &c.sndCond, t)
}

func (c *Conn) setDeadline(d *deadline, cond *sync.Cond, t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.userClosed {
		return c.opError("set deadline", net.ErrClosed)
	}
	if d.t != nil {
		d.t.Stop()
		d.t = nil
	}
	d.gen++
	d.expired = false
	if t.IsZero() {
		return nil
	}
	dur := time.Until(t)
	if dur <= 0 {
		d.expired = true
		cond.Broadcast()
		return nil
	}
	gen := d.gen
	d.t = time.AfterFunc(dur, func() {
		c.mu.Lock()
		if d.gen == gen {
			d.expired = true
			cond.Broadcast()
		}
		c.mu.Unlock()
	})
	return nil
}

func (c *Conn) stopDeadlines() {
	for _, d := range []*deadline{&c.rdl, &c.wdl} {
		if d.t != nil {
			d.t.Stop()
			d.t = nil
		}
		d.gen++
	}
}

func (c *Conn) opError(op string, err error) error {
	if err == io.EOF {
		return err
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}
