package netmap

import (
	"errors"
	"fmt"
	"io"
	"unicode/utf16"
	"unicode/utf8"
)

// jsonReader reads JSON from a stream through a fixed-size buffer and
// accepts exactly what encoding/json accepts, so that the map's peers can be
// decoded one field at a time without building wire structures first.
// Strings are unescaped into a scratch buffer valid until the next read. A
// value can be skipped, and so validated, while its bytes are copied out.
type jsonReader struct {
	r   io.Reader
	buf []byte
	pos int
	end int
	err error // the first read error (io.EOF at the end of the input)

	// While capture is non-nil, the bytes consumed from buf[capStart] on
	// are appended to it.
	capture  *[]byte
	capStart int

	str []byte // unescaped string scratch
}

// maxDepth bounds the nesting of values, as encoding/json does.
const maxDepth = 10000

// errSyntax marks malformed JSON.
var errSyntax = errors.New("invalid JSON")

const readBufferSize = 16 << 10

func (j *jsonReader) reset(r io.Reader) {
	j.r, j.pos, j.end, j.err = r, 0, 0, nil
	j.capture = nil
	if j.buf == nil {
		j.buf = make([]byte, readBufferSize)
	}
}

// release drops the reader and the scratch grown by a long string.
func (j *jsonReader) release() {
	j.r = nil
	if cap(j.str) > readBufferSize {
		j.str = nil
	}
}

// ensure makes at least n unread bytes available if the input has them.
func (j *jsonReader) ensure(n int) bool {
	if j.end-j.pos >= n {
		return true
	}
	if j.capture != nil {
		*j.capture = append(*j.capture, j.buf[j.capStart:j.pos]...)
		j.capStart = 0
	}
	j.end = copy(j.buf, j.buf[j.pos:j.end])
	j.pos = 0
	for j.end < n && j.err == nil {
		m, err := j.r.Read(j.buf[j.end:])
		j.end += m
		if err != nil {
			j.err = err
		}
	}
	return j.end >= n
}

// startCapture begins copying consumed bytes to dst.
func (j *jsonReader) startCapture(dst *[]byte) {
	j.capture, j.capStart = dst, j.pos
}

// stopCapture copies the rest of the consumed bytes and stops.
func (j *jsonReader) stopCapture() {
	*j.capture = append(*j.capture, j.buf[j.capStart:j.pos]...)
	j.capture = nil
}

// peek skips white space and returns the next byte without consuming it;
// ok is false at the end of the input.
func (j *jsonReader) peek() (c byte, ok bool) {
	for {
		if j.pos == j.end && !j.ensure(1) {
			return 0, false
		}
		switch c = j.buf[j.pos]; c {
		case ' ', '\t', '\n', '\r':
			j.pos++
		default:
			return c, true
		}
	}
}

// fail returns the error for what is at the read position: unexpected
// input, the end of the input, or a read error.
func (j *jsonReader) fail(where string) error {
	if j.pos == j.end && !j.ensure(1) {
		if j.err != nil && j.err != io.EOF {
			return j.err
		}
		return io.ErrUnexpectedEOF
	}
	return fmt.Errorf("%w: unexpected %q %s", errSyntax, j.buf[j.pos], where)
}

// expect consumes c, after white space.
func (j *jsonReader) expect(c byte, where string) error {
	if got, ok := j.peek(); !ok || got != c {
		return j.fail(where)
	}
	j.pos++
	return nil
}

// next moves to the next member of an object or element of an array whose
// opening delimiter was consumed: it consumes the ',' before any member but
// the first and reports true, or consumes the closing delimiter and reports
// false.
func (j *jsonReader) next(first *bool, closing byte) (bool, error) {
	c, ok := j.peek()
	if !ok {
		return false, j.fail("")
	}
	if c == closing {
		j.pos++
		return false, nil
	}
	if *first {
		*first = false
		return true, nil
	}
	if c != ',' {
		return false, j.fail("after a value")
	}
	j.pos++
	if c, ok := j.peek(); ok && c == closing {
		return false, j.fail("after a comma")
	}
	return true, nil
}

// readKey reads an object member's name and the colon after it. The name
// is valid until the next read.
func (j *jsonReader) readKey() ([]byte, error) {
	k, _, err := j.readString()
	if err != nil {
		return nil, err
	}
	return k, j.expect(':', "after an object key")
}

// isNull consumes a null, if that is the next value.
func (j *jsonReader) isNull() (bool, error) {
	if c, ok := j.peek(); !ok || c != 'n' {
		return false, nil
	}
	return true, j.literal("null")
}

func (j *jsonReader) literal(lit string) error {
	for i := 0; i < len(lit); i++ {
		if j.pos == j.end && !j.ensure(1) {
			return j.fail("in a literal")
		}
		if j.buf[j.pos] != lit[i] {
			return j.fail("in a literal")
		}
		j.pos++
	}
	return nil
}

// readString reads a string and returns its unescaped contents, valid until
// the next read, and whether it held escapes. Invalid UTF-8 and unpaired
// surrogates become U+FFFD, as with encoding/json.
func (j *jsonReader) readString() (s []byte, escaped bool, err error) {
	if err := j.expect('"', "where a string belongs"); err != nil {
		return nil, false, err
	}
	j.str = j.str[:0]
	for {
		start := j.pos
		for j.pos < j.end {
			if c := j.buf[j.pos]; c == '"' || c == '\\' || c < 0x20 || c >= utf8.RuneSelf {
				break
			}
			j.pos++
		}
		j.str = append(j.str, j.buf[start:j.pos]...)
		if j.pos == j.end && !j.ensure(1) {
			return nil, false, j.fail("in a string")
		}
		switch c := j.buf[j.pos]; {
		case c == '"':
			j.pos++
			return j.str, escaped, nil
		case c == '\\':
			escaped = true
			j.pos++
			if err := j.readEscape(); err != nil {
				return nil, false, err
			}
		case c < 0x20:
			return nil, false, j.fail("in a string")
		case c < utf8.RuneSelf:
			j.str = append(j.str, c) // after a refill
			j.pos++
		default:
			j.ensure(utf8.UTFMax)
			r, size := utf8.DecodeRune(j.buf[j.pos:j.end])
			if r == utf8.RuneError && size == 1 {
				j.str = utf8.AppendRune(j.str, r)
			} else {
				j.str = append(j.str, j.buf[j.pos:j.pos+size]...)
			}
			j.pos += size
		}
	}
}

// readEscape reads an escape whose backslash was consumed into j.str.
func (j *jsonReader) readEscape() error {
	if j.pos == j.end && !j.ensure(1) {
		return j.fail("in an escape")
	}
	c := j.buf[j.pos]
	switch c {
	case '"', '\\', '/':
	case 'b':
		c = '\b'
	case 'f':
		c = '\f'
	case 'n':
		c = '\n'
	case 'r':
		c = '\r'
	case 't':
		c = '\t'
	case 'u':
		j.pos++
		return j.readUnicodeEscape()
	default:
		return j.fail("in an escape")
	}
	j.pos++
	j.str = append(j.str, c)
	return nil
}

// readUnicodeEscape reads the four hex digits after "\u", and a second
// escape when the first is half of a surrogate pair.
func (j *jsonReader) readUnicodeEscape() error {
	r, err := j.readHex4()
	if err != nil {
		return err
	}
	for utf16.IsSurrogate(r) {
		// A pair needs "\u" next. Whatever else follows, this half is
		// replaced and the input goes on from there.
		if !j.ensure(2) || j.buf[j.pos] != '\\' || j.buf[j.pos+1] != 'u' {
			break
		}
		j.pos += 2
		r2, err := j.readHex4()
		if err != nil {
			return err
		}
		if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
			j.str = utf8.AppendRune(j.str, dec)
			return nil
		}
		j.str = utf8.AppendRune(j.str, utf8.RuneError)
		r = r2
	}
	if utf16.IsSurrogate(r) {
		r = utf8.RuneError
	}
	j.str = utf8.AppendRune(j.str, r)
	return nil
}

func (j *jsonReader) readHex4() (rune, error) {
	var r rune
	for range 4 {
		if j.pos == j.end && !j.ensure(1) {
			return 0, j.fail("in a \\u escape")
		}
		c := j.buf[j.pos]
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, j.fail("in a \\u escape")
		}
		r = r<<4 | rune(c)
		j.pos++
	}
	return r, nil
}

// readNumber reads a number and returns its text, valid until the next
// read.
func (j *jsonReader) readNumber() ([]byte, error) {
	if _, ok := j.peek(); !ok {
		return nil, j.fail("where a number belongs")
	}
	j.str = j.str[:0]
	take := func() byte {
		if j.pos == j.end && !j.ensure(1) {
			return 0
		}
		return j.buf[j.pos]
	}
	digits := func() int {
		n := 0
		for c := take(); '0' <= c && c <= '9'; c = take() {
			j.str = append(j.str, c)
			j.pos++
			n++
		}
		return n
	}
	if take() == '-' {
		j.str = append(j.str, '-')
		j.pos++
	}
	switch c := take(); {
	case c == '0':
		j.str = append(j.str, c)
		j.pos++
	case '1' <= c && c <= '9':
		digits()
	default:
		return nil, j.fail("in a number")
	}
	if take() == '.' {
		j.str = append(j.str, '.')
		j.pos++
		if digits() == 0 {
			return nil, j.fail("in a number")
		}
	}
	if c := take(); c == 'e' || c == 'E' {
		j.str = append(j.str, c)
		j.pos++
		if c := take(); c == '+' || c == '-' {
			j.str = append(j.str, c)
			j.pos++
		}
		if digits() == 0 {
			return nil, j.fail("in a number")
		}
	}
	return j.str, nil
}

// readBool reads true or false.
func (j *jsonReader) readBool() (bool, error) {
	c, ok := j.peek()
	switch {
	case ok && c == 't':
		return true, j.literal("true")
	case ok && c == 'f':
		return false, j.literal("false")
	}
	return false, j.fail("where a boolean belongs")
}

// kind returns the JSON type of the next value, for error messages.
func (j *jsonReader) kind() string {
	c, _ := j.peek()
	switch {
	case c == '"':
		return "string"
	case c == '{':
		return "object"
	case c == '[':
		return "array"
	case c == 't' || c == 'f':
		return "bool"
	case c == 'n':
		return "null"
	}
	return "number"
}

// skip reads and validates any value at nesting depth depth.
func (j *jsonReader) skip(depth int) error {
	c, ok := j.peek()
	if !ok {
		return j.fail("where a value belongs")
	}
	switch {
	case c == '{' || c == '[':
		if depth >= maxDepth {
			return fmt.Errorf("%w: nested too deep", errSyntax)
		}
		j.pos++
		closing := byte('}')
		if c == '[' {
			closing = ']'
		}
		for first := true; ; {
			more, err := j.next(&first, closing)
			if err != nil || !more {
				return err
			}
			if c == '{' {
				if err := j.skipString(); err != nil {
					return err
				}
				if err := j.expect(':', "after an object key"); err != nil {
					return err
				}
			}
			if err := j.skip(depth + 1); err != nil {
				return err
			}
		}
	case c == '"':
		return j.skipString()
	case c == 't':
		return j.literal("true")
	case c == 'f':
		return j.literal("false")
	case c == 'n':
		return j.literal("null")
	}
	_, err := j.readNumber()
	return err
}

// skipString validates a string without unescaping it.
func (j *jsonReader) skipString() error {
	if err := j.expect('"', "where a string belongs"); err != nil {
		return err
	}
	for {
		for j.pos < j.end {
			if c := j.buf[j.pos]; c == '"' || c == '\\' || c < 0x20 {
				break
			}
			j.pos++
		}
		if j.pos == j.end && !j.ensure(1) {
			return j.fail("in a string")
		}
		switch c := j.buf[j.pos]; {
		case c == '"':
			j.pos++
			return nil
		case c < 0x20:
			return j.fail("in a string")
		case c != '\\':
			j.pos++ // after a refill
			continue
		}
		j.pos++ // the backslash
		if j.pos == j.end && !j.ensure(1) {
			return j.fail("in an escape")
		}
		switch j.buf[j.pos] {
		case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			j.pos++
		case 'u':
			j.pos++
			if _, err := j.readHex4(); err != nil {
				return err
			}
		default:
			return j.fail("in an escape")
		}
	}
}

// finish checks that only white space follows the value just read.
func (j *jsonReader) finish() error {
	if _, ok := j.peek(); ok {
		return j.fail("after the top-level value")
	}
	if j.err != nil && j.err != io.EOF {
		return j.err
	}
	return nil
}
