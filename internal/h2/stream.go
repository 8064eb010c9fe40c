package h2

import (
	"context"
	"fmt"
	"io"
)

// stream is one request and its response. Fields after resc are guarded
// by cc.mu.
type stream struct {
	cc   *ClientConn
	id   uint32
	resc chan struct{} // closed when res is set or the stream failed first
	res  *Response

	resDone    bool
	gotHeaders bool
	buf        [][]byte // received, unread body data
	bufLen     int64
	recvErr    error // io.EOF after END_STREAM, or why the stream failed
	recvDone   bool  // no more frames expected from the server
	sendDone   bool  // our side is finished
	bodyClosed bool
	removed    bool
	recvWindow int64 // what the server may still send
	unacked    int64 // consumed but not yet returned to the server
	sendWindow int64
	notify     chan struct{} // data or an error arrived
	stopCtx    func() bool
}

func (s *stream) wakeLocked() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// dropBufferLocked discards unread data and returns its size, to be
// credited to the connection window.
func (s *stream) dropBufferLocked() int64 {
	n := s.bufLen
	s.buf, s.bufLen = nil, 0
	return n
}

// failStreamLocked ends s with err: RoundTrip or the body's Read returns
// it. It returns the connection window increment to send.
func (cc *ClientConn) failStreamLocked(s *stream, err error) int64 {
	var connInc int64
	if !s.recvDone {
		s.recvDone = true
		s.recvErr = err
		connInc = cc.creditConnLocked(s.dropBufferLocked())
	}
	s.sendDone = true
	if !s.resDone {
		s.resDone = true
		close(s.resc)
	}
	s.wakeLocked()
	cc.removeLocked(s)
	return connInc
}

// maybeRemoveLocked forgets s once both sides are finished.
func (cc *ClientConn) maybeRemoveLocked(s *stream) {
	if s.recvDone && s.sendDone {
		cc.removeLocked(s)
	}
}

func (cc *ClientConn) removeLocked(s *stream) {
	if s.removed {
		return
	}
	s.removed = true
	if cc.streams[s.id] == s {
		delete(cc.streams, s.id)
	}
	if s.stopCtx != nil {
		s.stopCtx()
	}
	cc.broadcastLocked()
	if cc.goAway && len(cc.streams) == 0 && cc.reserved == 0 && cc.err == nil {
		// Nothing left to finish: the connection is done.
		go cc.closeWith(ErrClosed)
	}
}

// abort ends s early for the reason err, telling the server with
// RST_STREAM if the stream is still open.
func (cc *ClientConn) abort(s *stream, err error, code ErrCode) {
	cc.mu.Lock()
	open := !s.removed && cc.err == nil
	connInc := cc.failStreamLocked(s, err)
	cc.mu.Unlock()
	if open {
		cc.writeRST(s.id, code)
	}
	cc.writeWindowUpdate(0, connInc)
}

// RoundTrip sends req and waits for the response headers. The response
// body streams until END_STREAM; canceling ctx resets the stream, and the
// body's Read then returns ctx's error.
func (cc *ClientConn) RoundTrip(ctx context.Context, req *Request) (*Response, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	fields, err := headerFields(req)
	if err != nil {
		return nil, err
	}
	// Wait for a stream slot.
	for {
		cc.mu.Lock()
		if err := cc.unusableLocked(); err != nil {
			cc.mu.Unlock()
			return nil, err
		}
		if len(cc.streams)+cc.reserved < cc.maxStreams {
			cc.reserved++
			cc.mu.Unlock()
			break
		}
		ch := cc.changed
		cc.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}

	cc.wmu.Lock()
	cc.mu.Lock()
	cc.reserved--
	if err := cc.unusableLocked(); err != nil {
		cc.broadcastLocked()
		cc.mu.Unlock()
		cc.wmu.Unlock()
		return nil, err
	}
	s := &stream{
		cc:         cc,
		id:         cc.nextID,
		resc:       make(chan struct{}),
		notify:     make(chan struct{}, 1),
		recvWindow: cc.streamWindow,
		sendWindow: cc.initWindow,
	}
	cc.nextID += 2
	if len(cc.streams) == 0 {
		// Nobody waited on the connection until now: its silence so far
		// says nothing about its health.
		cc.markRead()
	}
	cc.streams[s.id] = s
	maxFrame := cc.maxFrame
	cc.mu.Unlock()
	cc.encodeHeadersLocked(fields)
	err = cc.writeHeadersLocked(s.id, req.Body == nil, maxFrame)
	cc.wmu.Unlock()
	if err != nil {
		cc.mu.Lock()
		cc.failStreamLocked(s, err)
		cc.mu.Unlock()
		return nil, err
	}

	stop := context.AfterFunc(ctx, func() { cc.abort(s, ctx.Err(), ErrCodeCancel) })
	cc.mu.Lock()
	if s.removed {
		stop()
	} else {
		s.stopCtx = stop
	}
	if req.Body == nil {
		s.sendDone = true
		cc.maybeRemoveLocked(s)
	}
	cc.mu.Unlock()

	if req.Body != nil {
		if err := cc.writeBody(ctx, s, req.Body); err != nil {
			cc.abort(s, err, ErrCodeCancel)
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, err
		}
	}
	select {
	case <-s.resc:
	case <-ctx.Done():
		cc.abort(s, ctx.Err(), ErrCodeCancel)
		<-s.resc
	}
	if s.res == nil {
		cc.mu.Lock()
		err := s.recvErr
		cc.mu.Unlock()
		return nil, err
	}
	return s.res, nil
}

// unusableLocked returns why no new stream may start, or nil.
func (cc *ClientConn) unusableLocked() error {
	switch {
	case cc.err != nil:
		return fmt.Errorf("%w: %w", ErrNotProcessed, cc.err)
	case cc.goAway:
		return fmt.Errorf("%w: server sent GOAWAY", ErrNotProcessed)
	case cc.nextID >= maxStreamID:
		return fmt.Errorf("%w: stream IDs exhausted", ErrNotProcessed)
	}
	return nil
}

// writeBody sends body as DATA frames within the send windows, ending
// the stream at EOF.
func (cc *ClientConn) writeBody(ctx context.Context, s *stream, body io.Reader) error {
	size := defaultMaxFrame
	if l, ok := body.(interface{ Len() int }); ok {
		size = min(max(l.Len(), 512), size) // small JSON bodies need no 16 KiB
	}
	buf := make([]byte, size)
	for {
		n, rerr := body.Read(buf)
		data := buf[:n]
		for len(data) > 0 {
			k, err := cc.awaitSendWindow(ctx, s, len(data))
			if err != nil {
				return err
			}
			if k == 0 { // the server has answered in full: stop sending
				cc.mu.Lock()
				s.sendDone = true
				cc.maybeRemoveLocked(s)
				cc.mu.Unlock()
				cc.writeRST(s.id, ErrCodeNo)
				return nil
			}
			if err := cc.writeFrame(frameData, 0, s.id, data[:k]); err != nil {
				return err
			}
			data = data[k:]
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("h2: reading request body: %w", rerr)
		}
	}
	if err := cc.writeFrame(frameData, flagEndStream, s.id, nil); err != nil {
		return err
	}
	cc.mu.Lock()
	s.sendDone = true
	cc.maybeRemoveLocked(s)
	cc.mu.Unlock()
	return nil
}

// awaitSendWindow waits until some of n bytes may be sent on s and takes
// them from the windows. It returns 0 if the response is already
// complete.
func (cc *ClientConn) awaitSendWindow(ctx context.Context, s *stream, n int) (int, error) {
	for {
		cc.mu.Lock()
		if s.recvDone {
			err := s.recvErr
			cc.mu.Unlock()
			if err == io.EOF {
				return 0, nil
			}
			return 0, err
		}
		if cc.err != nil {
			err := cc.err
			cc.mu.Unlock()
			return 0, err
		}
		k := min(int64(n), s.sendWindow, cc.sendWindow, int64(cc.maxFrame))
		if k > 0 {
			s.sendWindow -= k
			cc.sendWindow -= k
			cc.mu.Unlock()
			return int(k), nil
		}
		ch := cc.changed
		cc.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// body is a response body.
type body struct{ s *stream }

// Read reads response data, replenishing the windows as it goes.
func (b body) Read(p []byte) (int, error) {
	s := b.s
	cc := s.cc
	for {
		cc.mu.Lock()
		if s.bodyClosed {
			cc.mu.Unlock()
			return 0, errBodyClosed
		}
		if s.bufLen > 0 && len(p) > 0 {
			n := 0
			for n < len(p) && len(s.buf) > 0 {
				c := copy(p[n:], s.buf[0])
				n += c
				if c == len(s.buf[0]) {
					s.buf[0] = nil
					s.buf = s.buf[1:]
				} else {
					s.buf[0] = s.buf[0][c:]
				}
			}
			s.bufLen -= int64(n)
			streamInc := cc.creditStreamLocked(s, int64(n))
			connInc := cc.creditConnLocked(int64(n))
			cc.mu.Unlock()
			cc.writeWindowUpdate(s.id, streamInc)
			cc.writeWindowUpdate(0, connInc)
			return n, nil
		}
		if s.recvErr != nil {
			err := s.recvErr
			cc.mu.Unlock()
			return 0, err
		}
		if len(p) == 0 {
			cc.mu.Unlock()
			return 0, nil
		}
		cc.mu.Unlock()
		<-s.notify
	}
}

// Close discards the rest of the body, resetting the stream if the
// server is still sending.
func (b body) Close() error {
	s := b.s
	cc := s.cc
	cc.mu.Lock()
	if s.bodyClosed {
		cc.mu.Unlock()
		return nil
	}
	s.bodyClosed = true
	if !s.recvDone {
		cc.mu.Unlock()
		cc.abort(s, errBodyClosed, ErrCodeCancel)
		return nil
	}
	connInc := cc.creditConnLocked(s.dropBufferLocked())
	cc.mu.Unlock()
	cc.writeWindowUpdate(0, connInc)
	return nil
}
