package h2

import (
	"fmt"
	"time"
)

// DefaultPingTimeout is how long a connection waits for the server after a
// liveness PING when Options.PingTimeout is zero.
const DefaultPingTimeout = 15 * time.Second

// PingTimeoutError is why a connection was closed when the server sent
// nothing, not even the PING's acknowledgement, within the timeout.
type PingTimeoutError struct {
	Silent time.Duration // how long nothing had been read
}

func (e PingTimeoutError) Error() string {
	return fmt.Sprintf("h2: server silent for %v, PING unanswered", e.Silent.Round(time.Second))
}

// markRead records that a frame has just been read, or that the first
// request after a quiet time has been sent, from which the server's silence
// starts to count.
func (cc *ClientConn) markRead() {
	cc.lastRead.Store(int64(time.Since(cc.born)))
}

// sinceRead returns how long ago the last frame was read (see markRead).
func (cc *ClientConn) sinceRead() time.Duration {
	return time.Since(cc.born) - time.Duration(cc.lastRead.Load())
}

// healthLoop watches a connection that has requests in flight: after idle
// without a frame from the server it sends a PING, and if nothing at all
// arrives within timeout it closes the connection, failing its streams
// with a PingTimeoutError. A connection without open streams is not
// pinged: nobody waits on it, and its death shows at the next request. It
// returns when the connection dies.
func (cc *ClientConn) healthLoop(idle, timeout time.Duration) {
	t := time.NewTimer(idle)
	defer t.Stop()
	for {
		select {
		case <-cc.done:
			return
		case <-t.C:
		}
		if silent := cc.sinceRead(); silent < idle {
			t.Reset(idle - silent)
			continue
		}
		if !cc.busy() {
			t.Reset(idle)
			continue
		}
		sent := time.Since(cc.born)
		cc.sendPing(timeout)
		t.Reset(timeout)
		select {
		case <-cc.done:
			return
		case <-t.C:
		}
		if time.Duration(cc.lastRead.Load()) < sent {
			cc.log.Debug("h2: PING unanswered; closing the connection", "silent", cc.sinceRead())
			cc.closeWith(PingTimeoutError{Silent: cc.sinceRead()})
			return
		}
		t.Reset(max(idle-cc.sinceRead(), time.Millisecond))
	}
}

// busy reports whether a request is open on the connection.
func (cc *ClientConn) busy() bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return len(cc.streams) > 0 || cc.reserved > 0
}

// sendPing writes a PING unless another write holds the connection, in
// which case the wait for the server stands in for it: a write stuck that
// long means a dead connection as surely as an unanswered PING. The write
// is bounded by timeout so that a full send buffer cannot hold the health
// check.
func (cc *ClientConn) sendPing(timeout time.Duration) {
	if !cc.wmu.TryLock() {
		return
	}
	defer cc.wmu.Unlock()
	cc.pings++
	var p [8]byte
	for i := range p {
		p[i] = byte(cc.pings >> (56 - 8*i))
	}
	cc.conn.SetWriteDeadline(time.Now().Add(timeout))
	err := cc.putFrameLocked(framePing, 0, 0, p[:])
	cc.conn.SetWriteDeadline(time.Time{})
	if err != nil {
		cc.closeWith(err)
	}
}
