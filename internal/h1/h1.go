// Package h1 reads and writes the small part of HTTP/1.1 (RFC 9112) the
// node needs outside the Noise session: the key fetch, the ts2021 and
// DERP upgrades, pings to plain URLs, control-to-node requests and the
// local API. Headers and bodies are bounded; bad input is an error.
package h1

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
)

// Limits on what is read.
const (
	maxLine        = 8 << 10 // one start or header line
	maxHeaderBytes = 64 << 10
	maxHeaderLines = 128
)

// Errors.
var (
	ErrMalformed = errors.New("h1: malformed message")
	ErrTooLarge  = errors.New("h1: message too large")
)

func malformed(what string) error { return fmt.Errorf("%w: %s", ErrMalformed, what) }

// Response is an HTTP/1.1 response.
type Response struct {
	Status int
	Reason string
	Header textproto.MIMEHeader
	// Body reads the body as framed by Content-Length, the chunked coding
	// or the end of the connection. It is empty for HEAD, 1xx, 204 and
	// 304. Its Close does not close the connection unless the response
	// came from Client.Do.
	Body io.ReadCloser
}

// Request is an HTTP/1.1 request as a server reads it.
type Request struct {
	Method string
	Target string // the request-target, such as "/status?x=1"
	Header textproto.MIMEHeader
	Body   []byte
	URL    *url.URL // Target parsed, set by Server
}

// readLine reads one CRLF- or LF-terminated line without the terminator.
func readLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if err == bufio.ErrBufferFull || len(line) > maxLine {
		return nil, fmt.Errorf("%w: line too long", ErrTooLarge)
	}
	if err != nil {
		if err == io.EOF && len(line) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

// validValue reports whether v may be a header value as is.
func validValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// readHeader reads header fields up to the empty line.
func readHeader(br *bufio.Reader) (textproto.MIMEHeader, error) {
	h := make(textproto.MIMEHeader)
	total := 0
	for n := 0; ; n++ {
		line, err := readLine(br)
		if err != nil {
			return nil, err
		}
		if len(line) == 0 {
			return h, nil
		}
		total += len(line)
		if n >= maxHeaderLines || total > maxHeaderBytes {
			return nil, fmt.Errorf("%w: header too large", ErrTooLarge)
		}
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok || !isToken(string(k)) {
			return nil, malformed("header line")
		}
		val := strings.Trim(string(v), " \t")
		if !validValue(val) {
			return nil, malformed("header value")
		}
		key := textproto.CanonicalMIMEHeaderKey(string(k))
		h[key] = append(h[key], val)
	}
}

// parseVersion accepts HTTP/1.0 and HTTP/1.1.
func parseVersion(v string) bool { return v == "HTTP/1.1" || v == "HTTP/1.0" }

// ReadResponse reads a response to a request with method from br. The
// body reads from br; for a 101 response br is left at the first byte
// of the new protocol.
func ReadResponse(br *bufio.Reader, method string) (*Response, error) {
	line, err := readLine(br)
	if err != nil {
		return nil, err
	}
	ver, rest, _ := strings.Cut(string(line), " ")
	code, reason, _ := strings.Cut(rest, " ")
	status, err := strconv.Atoi(code)
	if !parseVersion(ver) || err != nil || len(code) != 3 || status < 100 {
		return nil, malformed("status line")
	}
	h, err := readHeader(br)
	if err != nil {
		return nil, err
	}
	res := &Response{Status: status, Reason: reason, Header: h}
	var body io.Reader
	switch {
	case method == "HEAD" || status < 200 || status == 204 || status == 304:
		body = eofReader{}
	default:
		body, err = bodyReader(br, h, true)
		if err != nil {
			return nil, err
		}
	}
	res.Body = io.NopCloser(body)
	return res, nil
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

// bodyReader frames a message body by its header. Without framing a
// response body runs to EOF and a request has none.
func bodyReader(br *bufio.Reader, h textproto.MIMEHeader, response bool) (io.Reader, error) {
	if te := h.Values("Transfer-Encoding"); len(te) > 0 {
		if !strings.EqualFold(strings.TrimSpace(te[len(te)-1]), "chunked") || len(te) > 1 {
			if !response {
				return nil, malformed("transfer coding")
			}
			return br, nil
		}
		return &chunkedReader{br: br}, nil
	}
	if cl := h.Values("Content-Length"); len(cl) > 0 {
		for _, v := range cl[1:] {
			if v != cl[0] {
				return nil, malformed("conflicting Content-Length")
			}
		}
		n, err := strconv.ParseInt(cl[0], 10, 64)
		if err != nil || n < 0 || cl[0][0] == '+' {
			return nil, malformed("Content-Length")
		}
		return &fixedReader{r: br, n: n}, nil
	}
	if response {
		return br, nil
	}
	return eofReader{}, nil
}

// fixedReader reads exactly n bytes: an early EOF is an error.
type fixedReader struct {
	r io.Reader
	n int64
}

func (f *fixedReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > f.n {
		p = p[:f.n]
	}
	n, err := f.r.Read(p)
	f.n -= int64(n)
	if err == io.EOF && f.n > 0 {
		err = io.ErrUnexpectedEOF
	} else if err == io.EOF {
		err = nil
	}
	return n, err
}

// chunkedReader decodes the chunked transfer coding; trailers are
// discarded.
type chunkedReader struct {
	br      *bufio.Reader
	n       uint64 // left in the current chunk
	started bool   // a chunk has been read, so a CRLF precedes the next size
	err     error
}

func (c *chunkedReader) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	if c.n == 0 {
		if c.err = c.nextChunk(); c.err != nil {
			return 0, c.err
		}
	}
	if uint64(len(p)) > c.n {
		p = p[:c.n]
	}
	n, err := c.br.Read(p)
	c.n -= uint64(n)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		c.err = err
	}
	return n, err
}

// nextChunk reads the next chunk's size line, or the last chunk and the
// trailer section (returning io.EOF).
func (c *chunkedReader) nextChunk() error {
	if c.started {
		line, err := readLine(c.br)
		if err != nil {
			return eofIsUnexpected(err)
		}
		if len(line) != 0 {
			return malformed("chunk not followed by CRLF")
		}
	}
	c.started = true
	line, err := readLine(c.br)
	if err != nil {
		return eofIsUnexpected(err)
	}
	size, _, _ := bytes.Cut(line, []byte(";"))
	size = bytes.TrimRight(size, " \t")
	n, err := strconv.ParseUint(string(size), 16, 63)
	if err != nil || len(size) == 0 {
		return malformed("chunk size")
	}
	if n > 0 {
		c.n = n
		return nil
	}
	for i := 0; ; i++ {
		line, err := readLine(c.br)
		if err != nil {
			return eofIsUnexpected(err)
		}
		if len(line) == 0 {
			return io.EOF
		}
		if i >= maxHeaderLines {
			return fmt.Errorf("%w: trailers too large", ErrTooLarge)
		}
	}
}

func eofIsUnexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// ReadRequestHeader reads a request's line and header, leaving br at the
// first byte of its body (for a proxy that passes the body on as it
// comes). The returned Request has no Body; RequestBody frames it.
func ReadRequestHeader(br *bufio.Reader) (*Request, error) {
	line, err := readLine(br)
	if err != nil {
		return nil, err
	}
	parts := strings.Split(string(line), " ")
	if len(parts) != 3 || !isToken(parts[0]) || parts[1] == "" || !parseVersion(parts[2]) || !validValue(parts[1]) {
		return nil, malformed("request line")
	}
	h, err := readHeader(br)
	if err != nil {
		return nil, err
	}
	return &Request{Method: parts[0], Target: parts[1], Header: h}, nil
}

// RequestBody returns a reader of req's body from br, framed by its
// Content-Length or chunked coding (empty without either), or an error for
// a framing the server must refuse.
func RequestBody(br *bufio.Reader, req *Request) (io.Reader, error) {
	return bodyReader(br, req.Header, false)
}

// ReadRequest reads a request whose body is at most maxBody bytes.
func ReadRequest(br *bufio.Reader, maxBody int) (*Request, error) {
	req, err := ReadRequestHeader(br)
	if err != nil {
		return nil, err
	}
	body, err := bodyReader(br, req.Header, false)
	if err != nil {
		return nil, err
	}
	if f, ok := body.(*fixedReader); ok && f.n > int64(maxBody) {
		return nil, fmt.Errorf("%w: body of %d bytes", ErrTooLarge, f.n)
	}
	b, err := io.ReadAll(io.LimitReader(body, int64(maxBody)+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxBody {
		return nil, fmt.Errorf("%w: body over %d bytes", ErrTooLarge, maxBody)
	}
	req.Body = b
	return req, nil
}

// writeHeader appends header fields, refusing ones that would break the
// message.
func writeHeader(b *bytes.Buffer, h textproto.MIMEHeader) error {
	for k, vs := range h {
		if !isToken(k) {
			return fmt.Errorf("h1: invalid header name %q", k)
		}
		for _, v := range vs {
			if !validValue(v) {
				return fmt.Errorf("h1: invalid value for header %s", k)
			}
			b.WriteString(k + ": " + v + "\r\n")
		}
	}
	return nil
}

// WriteRequest writes a request with body (nil for none) to w. Host is
// the Host header; Content-Length is set for any body and for POST and
// PUT. Header adds further fields.
func WriteRequest(w io.Writer, method, target, host string, h textproto.MIMEHeader, body []byte) error {
	if !isToken(method) || target == "" || !validValue(target) || strings.ContainsAny(target, " ") || !validValue(host) {
		return errors.New("h1: invalid request line or host")
	}
	var b bytes.Buffer
	b.WriteString(method + " " + target + " HTTP/1.1\r\nHost: " + host + "\r\n")
	if err := writeHeader(&b, h); err != nil {
		return err
	}
	if body != nil || method == "POST" || method == "PUT" {
		b.WriteString("Content-Length: " + strconv.Itoa(len(body)) + "\r\n")
	}
	b.WriteString("\r\n")
	b.Write(body)
	_, err := w.Write(b.Bytes())
	return err
}

// WriteResponse writes a complete response with body to w, with
// Content-Length set.
func WriteResponse(w io.Writer, status int, h textproto.MIMEHeader, body []byte) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "HTTP/1.1 %03d %s\r\n", status, StatusText(status))
	if err := writeHeader(&b, h); err != nil {
		return err
	}
	if status >= 200 && status != 204 && status != 304 {
		b.WriteString("Content-Length: " + strconv.Itoa(len(body)) + "\r\n")
	}
	b.WriteString("\r\n")
	b.Write(body)
	_, err := w.Write(b.Bytes())
	return err
}

var statusText = map[int]string{
	100: "Continue", 101: "Switching Protocols",
	200: "OK", 201: "Created", 202: "Accepted", 204: "No Content",
	301: "Moved Permanently", 302: "Found", 304: "Not Modified",
	400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
	405: "Method Not Allowed", 408: "Request Timeout", 413: "Request Entity Too Large",
	429: "Too Many Requests",
	500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
	503: "Service Unavailable", 504: "Gateway Timeout",
}

// StatusText returns the reason phrase of a status code, or "" if it is
// not one this package knows.
func StatusText(code int) string { return statusText[code] }
