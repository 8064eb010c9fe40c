package h2

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/textproto"
	"strconv"

	"github.com/microlink-go/microlink/internal/hpack"
)

// reader is the read loop's state.
type reader struct {
	cc  *ClientConn
	fr  framer
	dec *hpack.Decoder

	gotSettings bool
	// A header block in progress: HEADERS and its CONTINUATIONs.
	contID    uint32
	contEnd   bool // the HEADERS frame had END_STREAM
	block     []byte
	inBlock   bool
	pingReply [8]byte
}

// readLoop reads frames until the connection fails.
func (cc *ClientConn) readLoop() {
	defer close(cc.done)
	r := &reader{
		cc:  cc,
		fr:  framer{r: bufio.NewReaderSize(cc.conn, 4096), maxRead: defaultMaxFrame},
		dec: hpack.NewDecoder(defaultHeaderTable),
	}
	r.dec.SetMaxStringLength(int(cc.maxHeader))
	for {
		h, p, err := r.fr.readFrame()
		if err == nil {
			cc.markRead()
			err = r.handle(h, p)
		}
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			cc.closeWith(err)
			return
		}
	}
}

// handle processes one frame.
func (r *reader) handle(h frameHeader, p []byte) error {
	if r.inBlock && (h.typ != frameContinuation || h.streamID != r.contID) {
		return protoErr("header block interrupted by frame type %d", h.typ)
	}
	if !r.gotSettings && h.typ != frameSettings {
		return protoErr("first frame is type %d, not SETTINGS", h.typ)
	}
	switch h.typ {
	case frameData:
		return r.onData(h, p)
	case frameHeaders:
		if h.streamID == 0 {
			return protoErr("HEADERS on stream 0")
		}
		frag, err := headersFragment(h, p)
		if err != nil {
			return err
		}
		r.contID, r.contEnd, r.block = h.streamID, h.has(flagEndStream), append(r.block[:0], frag...)
		r.inBlock = true
		return r.maybeEndBlock(h)
	case frameContinuation:
		if !r.inBlock {
			return protoErr("CONTINUATION without HEADERS")
		}
		if len(r.block)+len(p) > int(r.cc.maxHeader)+defaultMaxFrame {
			return connError{ErrCodeEnhanceYourCalm, "header block too large"}
		}
		r.block = append(r.block, p...)
		return r.maybeEndBlock(h)
	case framePriority:
		if h.streamID == 0 {
			return protoErr("PRIORITY on stream 0")
		}
		if len(p) != 5 {
			return connError{ErrCodeFrameSize, "PRIORITY length not 5"}
		}
		return nil
	case frameRSTStream:
		code, err := parseRSTStream(h, p)
		if err != nil {
			return err
		}
		return r.onRST(h.streamID, code)
	case frameSettings:
		return r.onSettings(h, p)
	case framePushPromise:
		return protoErr("PUSH_PROMISE with push disabled")
	case framePing:
		if err := parsePing(h, p); err != nil {
			return err
		}
		if !h.has(flagAck) {
			copy(r.pingReply[:], p)
			return r.cc.writeFrame(framePing, flagAck, 0, r.pingReply[:])
		}
		return nil
	case frameGoAway:
		last, code, debug, err := parseGoAway(h, p)
		if err != nil {
			return err
		}
		r.onGoAway(last, code, debug)
		return nil
	case frameWindowUpdate:
		inc, err := parseWindowUpdate(p)
		if err != nil {
			return err
		}
		return r.onWindowUpdate(h.streamID, inc)
	}
	return nil // unknown frame types are ignored
}

// idleLocked reports whether id names a stream we never opened.
func (cc *ClientConn) idleLocked(id uint32) bool {
	return id%2 == 0 || id >= cc.nextID
}

func (r *reader) onData(h frameHeader, p []byte) error {
	cc := r.cc
	if h.streamID == 0 {
		return protoErr("DATA on stream 0")
	}
	data, err := unpad(h, p)
	if err != nil {
		return err
	}
	n := int64(len(p))
	cc.mu.Lock()
	if n > cc.recvWindow {
		cc.mu.Unlock()
		return connError{ErrCodeFlowControl, "server exceeded the connection window"}
	}
	cc.recvWindow -= n
	s := cc.streams[h.streamID]
	if s == nil || s.recvDone || s.bodyClosed {
		idle := s == nil && cc.idleLocked(h.streamID)
		connInc := cc.creditConnLocked(n)
		cc.mu.Unlock()
		if idle {
			return protoErr("DATA on idle stream %d", h.streamID)
		}
		cc.writeWindowUpdate(0, connInc)
		return nil
	}
	if !s.gotHeaders || n > s.recvWindow {
		code := ErrCodeProtocol
		if s.gotHeaders {
			code = ErrCodeFlowControl
		}
		connInc := cc.creditConnLocked(n)
		connInc += cc.failStreamLocked(s, fmt.Errorf("h2: stream %d: %v from server", s.id, code))
		cc.mu.Unlock()
		cc.writeRST(s.id, code)
		cc.writeWindowUpdate(0, connInc)
		return nil
	}
	s.recvWindow -= n
	pad := n - int64(len(data))
	streamInc := cc.creditStreamLocked(s, pad)
	connInc := cc.creditConnLocked(pad)
	if len(data) > 0 {
		s.buf = append(s.buf, append([]byte(nil), data...))
		s.bufLen += int64(len(data))
	}
	if h.has(flagEndStream) {
		s.recvDone = true
		s.recvErr = io.EOF
		cc.maybeRemoveLocked(s)
	}
	s.wakeLocked()
	cc.mu.Unlock()
	cc.writeWindowUpdate(s.id, streamInc)
	cc.writeWindowUpdate(0, connInc)
	return nil
}

// maybeEndBlock decodes the header block once it is complete.
func (r *reader) maybeEndBlock(h frameHeader) error {
	if !h.has(flagEndHeaders) {
		return nil
	}
	r.inBlock = false
	fields, err := r.dec.DecodeFull(r.block)
	if err != nil {
		return connError{ErrCodeCompression, err.Error()}
	}
	return r.onHeaders(r.contID, fields, r.contEnd)
}

func (r *reader) onHeaders(id uint32, fields []hpack.HeaderField, endStream bool) error {
	cc := r.cc
	cc.mu.Lock()
	s, err := cc.streamLocked(id, "HEADERS")
	if s == nil {
		return err
	}
	if s.recvDone {
		cc.mu.Unlock()
		return nil
	}
	if s.gotHeaders { // trailers: ignored, but they end the stream
		if endStream {
			s.recvDone = true
			s.recvErr = io.EOF
			s.wakeLocked()
			cc.maybeRemoveLocked(s)
		}
		cc.mu.Unlock()
		return nil
	}
	res, err := r.response(fields)
	if err != nil {
		connInc := cc.failStreamLocked(s, fmt.Errorf("h2: stream %d: %w", id, err))
		cc.mu.Unlock()
		cc.writeRST(id, ErrCodeProtocol)
		cc.writeWindowUpdate(0, connInc)
		return nil
	}
	if res.Status < 200 { // informational: the real response follows
		cc.mu.Unlock()
		if endStream {
			return protoErr("informational response ends stream %d", id)
		}
		return nil
	}
	s.gotHeaders = true
	res.Body = body{s}
	s.res = res
	s.resDone = true
	close(s.resc)
	if endStream {
		s.recvDone = true
		s.recvErr = io.EOF
		cc.maybeRemoveLocked(s)
	}
	s.wakeLocked()
	cc.mu.Unlock()
	return nil
}

var errBadStatus = errors.New("missing or malformed :status")

// response builds a Response from a decoded header list.
func (r *reader) response(fields []hpack.HeaderField) (*Response, error) {
	res := &Response{Header: make(textproto.MIMEHeader)}
	size := 0
	for _, f := range fields {
		size += len(f.Name) + len(f.Value) + 32
		if size > int(r.cc.maxHeader) {
			return nil, errors.New("response header list too large")
		}
		if len(f.Name) > 0 && f.Name[0] == ':' {
			if f.Name != ":status" || res.Status != 0 {
				return nil, fmt.Errorf("unexpected pseudo-header %q", f.Name)
			}
			code, err := strconv.Atoi(f.Value)
			if err != nil || len(f.Value) != 3 || code < 100 {
				return nil, errBadStatus
			}
			res.Status = code
			continue
		}
		k := textproto.CanonicalMIMEHeaderKey(f.Name)
		res.Header[k] = append(res.Header[k], f.Value)
	}
	if res.Status == 0 {
		return nil, errBadStatus
	}
	return res, nil
}

func (r *reader) onRST(id uint32, code ErrCode) error {
	cc := r.cc
	cc.mu.Lock()
	s, err := cc.streamLocked(id, "RST_STREAM")
	if s == nil {
		return err
	}
	err = StreamError{id, code}
	if code == ErrCodeRefusedStream {
		err = fmt.Errorf("%w: %w", ErrNotProcessed, err)
	}
	connInc := cc.failStreamLocked(s, err)
	cc.mu.Unlock()
	cc.writeWindowUpdate(0, connInc)
	return nil
}

func (r *reader) onSettings(h frameHeader, p []byte) error {
	cc := r.cc
	if !h.has(flagAck) {
		r.gotSettings = true
	}
	cc.mu.Lock()
	err := parseSettings(h, p, func(s setting) error {
		switch s.id {
		case settingMaxConcurrentStreams:
			cc.maxStreams = int(min(s.val, 1<<20))
		case settingInitialWindowSize:
			delta := int64(s.val) - cc.initWindow
			for _, st := range cc.streams {
				if st.sendWindow+delta > maxWindow {
					return connError{ErrCodeFlowControl, "INITIAL_WINDOW_SIZE overflows a stream window"}
				}
				st.sendWindow += delta
			}
			cc.initWindow = int64(s.val)
		case settingMaxFrameSize:
			cc.maxFrame = int(min(s.val, defaultMaxFrame)) // our write buffer's size
		case settingHeaderTableSize:
			// The size the peer's decoder allows ours: our encoder
			// never uses the dynamic table, so any size will do.
		}
		return nil
	})
	cc.broadcastLocked()
	cc.mu.Unlock()
	if err != nil || h.has(flagAck) {
		return err
	}
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	return cc.writeFrameLocked(frameSettings, flagAck, 0, nil)
}

func (r *reader) onGoAway(last uint32, code ErrCode, debug []byte) {
	cc := r.cc
	cc.mu.Lock()
	cc.log.Debug("h2: GOAWAY", "last", last, "code", code.String(), "debug", string(debug[:min(len(debug), 256)]))
	if cc.goAway && last > cc.lastStream {
		last = cc.lastStream // a later GOAWAY may only lower it
	}
	cc.goAway, cc.lastStream = true, last
	var connInc int64
	for id, s := range cc.streams {
		if id > last {
			connInc += cc.failStreamLocked(s, fmt.Errorf("%w: stream %d above GOAWAY's last stream %d (%v)", ErrNotProcessed, id, last, code))
		}
	}
	cc.broadcastLocked()
	idle := len(cc.streams) == 0 && cc.reserved == 0 && cc.err == nil
	cc.mu.Unlock()
	if idle {
		cc.closeWith(ErrClosed)
		return
	}
	cc.writeWindowUpdate(0, connInc)
}

func (r *reader) onWindowUpdate(id uint32, inc uint32) error {
	cc := r.cc
	cc.mu.Lock()
	if id == 0 {
		if inc == 0 {
			cc.mu.Unlock()
			return protoErr("WINDOW_UPDATE of 0 on the connection")
		}
		if cc.sendWindow+int64(inc) > maxWindow {
			cc.mu.Unlock()
			return connError{ErrCodeFlowControl, "connection send window overflow"}
		}
		cc.sendWindow += int64(inc)
		cc.broadcastLocked()
		cc.mu.Unlock()
		return nil
	}
	s, err := cc.streamLocked(id, "WINDOW_UPDATE")
	if s == nil {
		return err
	}
	if inc == 0 || s.sendWindow+int64(inc) > maxWindow {
		code := ErrCodeProtocol
		if inc != 0 {
			code = ErrCodeFlowControl
		}
		connInc := cc.failStreamLocked(s, fmt.Errorf("h2: stream %d: bad WINDOW_UPDATE (%v)", id, code))
		cc.mu.Unlock()
		cc.writeRST(id, code)
		cc.writeWindowUpdate(0, connInc)
		return nil
	}
	s.sendWindow += int64(inc)
	cc.broadcastLocked()
	cc.mu.Unlock()
	return nil
}

// streamLocked returns stream id for a frame of the given type, with
// cc.mu held. Without such a stream it releases cc.mu and returns nil and
// the error for a frame on an idle stream, or nil for one on a stream
// already closed, whose late frames are ignored. cc.mu is held.
func (cc *ClientConn) streamLocked(id uint32, frame string) (*stream, error) {
	if s := cc.streams[id]; s != nil {
		return s, nil
	}
	idle := cc.idleLocked(id)
	cc.mu.Unlock()
	if idle {
		return nil, protoErr("%s on idle stream %d", frame, id)
	}
	return nil, nil
}
