package h2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Frame types (RFC 9113, section 6).
const (
	frameData         = 0x0
	frameHeaders      = 0x1
	framePriority     = 0x2
	frameRSTStream    = 0x3
	frameSettings     = 0x4
	framePushPromise  = 0x5
	framePing         = 0x6
	frameGoAway       = 0x7
	frameWindowUpdate = 0x8
	frameContinuation = 0x9
)

// Frame flags.
const (
	flagEndStream  = 0x1
	flagAck        = 0x1
	flagEndHeaders = 0x4
	flagPadded     = 0x8
	flagPriority   = 0x20
)

// Settings identifiers.
const (
	settingHeaderTableSize      = 0x1
	settingEnablePush           = 0x2
	settingMaxConcurrentStreams = 0x3
	settingInitialWindowSize    = 0x4
	settingMaxFrameSize         = 0x5
	settingMaxHeaderListSize    = 0x6
)

// Protocol limits.
const (
	frameHeaderLen     = 9
	defaultMaxFrame    = 1 << 14
	maxAllowedFrame    = 1<<24 - 1
	defaultWindow      = 65535
	maxWindow          = 1<<31 - 1
	clientPreface      = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	maxStreamID        = 1<<31 - 1
	streamIDMask       = 1<<31 - 1
	defaultMaxStreams  = 100 // assumed until the server's SETTINGS arrive
	defaultHeaderTable = 4096
)

// ErrCode is an HTTP/2 error code.
type ErrCode uint32

// Error codes used by this package.
const (
	ErrCodeNo                 ErrCode = 0x0
	ErrCodeProtocol           ErrCode = 0x1
	ErrCodeInternal           ErrCode = 0x2
	ErrCodeFlowControl        ErrCode = 0x3
	ErrCodeStreamClosed       ErrCode = 0x5
	ErrCodeFrameSize          ErrCode = 0x6
	ErrCodeRefusedStream      ErrCode = 0x7
	ErrCodeCancel             ErrCode = 0x8
	ErrCodeCompression        ErrCode = 0x9
	ErrCodeEnhanceYourCalm    ErrCode = 0xb
	ErrCodeInadequateSecurity ErrCode = 0xc
)

func (c ErrCode) String() string {
	names := [...]string{"NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR",
		"SETTINGS_TIMEOUT", "STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM", "CANCEL",
		"COMPRESSION_ERROR", "CONNECT_ERROR", "ENHANCE_YOUR_CALM", "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED"}
	if int(c) < len(names) {
		return names[c]
	}
	return fmt.Sprintf("error code 0x%x", uint32(c))
}

// connError is a connection error: the connection is unusable.
type connError struct {
	code ErrCode
	msg  string
}

func (e connError) Error() string { return fmt.Sprintf("h2: connection error %v: %s", e.code, e.msg) }

func protoErr(format string, args ...any) error {
	return connError{ErrCodeProtocol, fmt.Sprintf(format, args...)}
}

// frameHeader is the fixed 9-byte start of every frame.
type frameHeader struct {
	length   uint32
	typ      uint8
	flags    uint8
	streamID uint32
}

func (h frameHeader) has(f uint8) bool { return h.flags&f != 0 }

// framer reads frames into a reused buffer.
type framer struct {
	r       io.Reader
	hdr     [frameHeaderLen]byte
	buf     []byte
	maxRead uint32 // largest payload accepted
}

// readFrame reads one frame. The payload is valid until the next call.
func (f *framer) readFrame() (frameHeader, []byte, error) {
	if _, err := io.ReadFull(f.r, f.hdr[:]); err != nil {
		return frameHeader{}, nil, err
	}
	h := frameHeader{
		length:   uint32(f.hdr[0])<<16 | uint32(f.hdr[1])<<8 | uint32(f.hdr[2]),
		typ:      f.hdr[3],
		flags:    f.hdr[4],
		streamID: binary.BigEndian.Uint32(f.hdr[5:]) & streamIDMask,
	}
	if h.length > f.maxRead {
		return h, nil, connError{ErrCodeFrameSize, fmt.Sprintf("frame of %d bytes exceeds %d", h.length, f.maxRead)}
	}
	if cap(f.buf) < int(h.length) {
		f.buf = make([]byte, h.length, max(int(h.length), 1024))
	}
	p := f.buf[:h.length]
	if _, err := io.ReadFull(f.r, p); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return h, nil, err
	}
	return h, p, nil
}

// appendFrameHeader appends a frame header to b.
func appendFrameHeader(b []byte, length int, typ, flags uint8, streamID uint32) []byte {
	return append(b, byte(length>>16), byte(length>>8), byte(length), typ, flags,
		byte(streamID>>24), byte(streamID>>16), byte(streamID>>8), byte(streamID))
}

var errPadding = connError{ErrCodeProtocol, "padding longer than frame"}

// unpad strips the padding of a PADDED frame's payload.
func unpad(h frameHeader, p []byte) ([]byte, error) {
	if !h.has(flagPadded) {
		return p, nil
	}
	if len(p) < 1 {
		return nil, errPadding
	}
	pad := int(p[0])
	p = p[1:]
	if pad > len(p) {
		return nil, errPadding
	}
	return p[:len(p)-pad], nil
}

// headersFragment returns the header block fragment of a HEADERS frame.
func headersFragment(h frameHeader, p []byte) ([]byte, error) {
	p, err := unpad(h, p)
	if err != nil {
		return nil, err
	}
	if h.has(flagPriority) {
		if len(p) < 5 {
			return nil, protoErr("HEADERS priority field truncated")
		}
		p = p[5:]
	}
	return p, nil
}

// setting is one SETTINGS parameter.
type setting struct {
	id  uint16
	val uint32
}

// parseSettings validates a SETTINGS payload and calls fn for each
// parameter.
func parseSettings(h frameHeader, p []byte, fn func(setting) error) error {
	if h.streamID != 0 {
		return protoErr("SETTINGS on stream %d", h.streamID)
	}
	if h.has(flagAck) {
		if len(p) != 0 {
			return connError{ErrCodeFrameSize, "SETTINGS ACK with payload"}
		}
		return nil
	}
	if len(p)%6 != 0 {
		return connError{ErrCodeFrameSize, "SETTINGS length not a multiple of 6"}
	}
	for ; len(p) > 0; p = p[6:] {
		s := setting{binary.BigEndian.Uint16(p), binary.BigEndian.Uint32(p[2:])}
		switch s.id {
		case settingEnablePush:
			if s.val > 1 {
				return protoErr("bad ENABLE_PUSH %d", s.val)
			}
		case settingInitialWindowSize:
			if s.val > maxWindow {
				return connError{ErrCodeFlowControl, "INITIAL_WINDOW_SIZE too large"}
			}
		case settingMaxFrameSize:
			if s.val < defaultMaxFrame || s.val > maxAllowedFrame {
				return protoErr("bad MAX_FRAME_SIZE %d", s.val)
			}
		}
		if err := fn(s); err != nil {
			return err
		}
	}
	return nil
}

// parseWindowUpdate returns a WINDOW_UPDATE's increment.
func parseWindowUpdate(p []byte) (uint32, error) {
	if len(p) != 4 {
		return 0, connError{ErrCodeFrameSize, "WINDOW_UPDATE length not 4"}
	}
	return binary.BigEndian.Uint32(p) & streamIDMask, nil
}

// parseRSTStream returns a RST_STREAM's error code.
func parseRSTStream(h frameHeader, p []byte) (ErrCode, error) {
	if len(p) != 4 {
		return 0, connError{ErrCodeFrameSize, "RST_STREAM length not 4"}
	}
	if h.streamID == 0 {
		return 0, protoErr("RST_STREAM on stream 0")
	}
	return ErrCode(binary.BigEndian.Uint32(p)), nil
}

// parseGoAway returns a GOAWAY's last stream ID and error code.
func parseGoAway(h frameHeader, p []byte) (last uint32, code ErrCode, debug []byte, err error) {
	if h.streamID != 0 {
		return 0, 0, nil, protoErr("GOAWAY on stream %d", h.streamID)
	}
	if len(p) < 8 {
		return 0, 0, nil, connError{ErrCodeFrameSize, "GOAWAY shorter than 8 bytes"}
	}
	return binary.BigEndian.Uint32(p) & streamIDMask, ErrCode(binary.BigEndian.Uint32(p[4:])), p[8:], nil
}

// parsePing checks a PING frame.
func parsePing(h frameHeader, p []byte) error {
	if h.streamID != 0 {
		return protoErr("PING on stream %d", h.streamID)
	}
	if len(p) != 8 {
		return connError{ErrCodeFrameSize, "PING length not 8"}
	}
	return nil
}

var errFrameTooLarge = errors.New("h2: frame too large")
