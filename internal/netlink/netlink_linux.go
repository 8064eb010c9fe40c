package netlink

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Request flags, as in linux/netlink.h.
const (
	FlagRequest = unix.NLM_F_REQUEST
	FlagAck     = unix.NLM_F_ACK
	FlagDump    = unix.NLM_F_DUMP
	FlagCreate  = unix.NLM_F_CREATE
	FlagExcl    = unix.NLM_F_EXCL
	FlagReplace = unix.NLM_F_REPLACE
	FlagAppend  = unix.NLM_F_APPEND
)

// Conn is a netlink socket of one protocol (unix.NETLINK_ROUTE,
// unix.NETLINK_NETFILTER). Its methods are safe for concurrent use; they
// run one request at a time.
type Conn struct {
	mu   sync.Mutex
	fd   int
	seq  uint32
	rbuf []byte
}

// Dial opens a netlink socket of protocol proto.
func Dial(proto int) (*Conn, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return nil, fmt.Errorf("netlink: socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netlink: bind: %w", err)
	}
	// Errors carry the request's header only, not the whole request.
	unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1)
	unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_EXT_ACK, 1)
	// A kernel that leaves a request unanswered (nf_tables stops
	// acknowledging a batch after its first error) must not hang us.
	tv := unix.NsecToTimeval(int64(receiveTimeout))
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	return &Conn{fd: fd, rbuf: make([]byte, 32<<10)}, nil
}

// Close closes the socket.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fd < 0 {
		return nil
	}
	err := unix.Close(c.fd)
	c.fd = -1
	return err
}

// receiveTimeout bounds the wait for the kernel's answers to a request.
const receiveTimeout = 5 * time.Second

// Message is one netlink message: its type, flags and payload (the
// family header and the attributes).
type Message struct {
	Type  uint16
	Flags uint16
	Data  []byte
	// NoAck leaves out FlagAck, for messages the kernel does not
	// acknowledge, such as the ends of an nf_tables batch.
	NoAck bool
}

// Error is the kernel's refusal of a request.
type Error struct {
	Errno syscall.Errno
	Msg   string // the kernel's extended message, if it gave one
}

func (e *Error) Error() string {
	if e.Msg != "" {
		return "netlink: " + e.Msg + ": " + e.Errno.Error()
	}
	return "netlink: " + e.Errno.Error()
}

// Unwrap lets errors.Is match the errno, such as unix.EEXIST.
func (e *Error) Unwrap() error { return e.Errno }

// Execute sends the messages as one datagram (a batch, for nf_tables)
// with FlagRequest and FlagAck added, and waits for the kernel to answer
// every one of them. It returns the first error the kernel reported, and
// for a single FlagDump request the messages of the dump.
func (c *Conn) Execute(msgs ...Message) ([]Message, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fd < 0 {
		return nil, errors.New("netlink: closed")
	}
	var b []byte
	first := c.seq + 1
	dump := false
	acks := 0
	for _, m := range msgs {
		c.seq++
		flags := m.Flags | FlagRequest
		switch {
		case m.Flags&FlagDump == FlagDump:
			dump = true
		case m.NoAck:
		default:
			flags |= FlagAck
			acks++
		}
		b = appendHeader(b, len(m.Data), m.Type, flags, c.seq)
		b = append(b, m.Data...)
		b = pad(b)
	}
	last := c.seq
	if err := unix.Sendto(c.fd, b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("netlink: send: %w", err)
	}
	var out []Message
	var firstErr error
	pending := acks
	if dump {
		pending++
	}
	for pending > 0 {
		n, _, err := unix.Recvfrom(c.fd, c.rbuf, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			if firstErr != nil {
				return out, firstErr
			}
			return out, fmt.Errorf("netlink: receive: %w", err)
		}
		for rest := c.rbuf[:n]; len(rest) >= unix.SizeofNlMsghdr; {
			l := int(binary.NativeEndian.Uint32(rest[0:4]))
			if l < unix.SizeofNlMsghdr || l > len(rest) {
				return out, errors.New("netlink: malformed message from the kernel")
			}
			typ := binary.NativeEndian.Uint16(rest[4:6])
			flags := binary.NativeEndian.Uint16(rest[6:8])
			seq := binary.NativeEndian.Uint32(rest[8:12])
			data := rest[unix.SizeofNlMsghdr:l]
			rest = rest[min(align(l), len(rest)):]
			if seq < first || seq > last {
				continue // a late answer to an abandoned request
			}
			switch typ {
			case unix.NLMSG_ERROR:
				pending--
				e := parseError(data)
				if e != nil && firstErr == nil {
					firstErr = e
				}
				if e != nil && dump {
					return out, firstErr
				}
			case unix.NLMSG_DONE:
				if dump {
					pending--
				}
			default:
				if dump {
					out = append(out, Message{Type: typ, Flags: flags, Data: append([]byte(nil), data...)})
				}
			}
		}
	}
	return out, firstErr
}

// parseError returns the error an NLMSG_ERROR payload carries, or nil for
// an acknowledgement.
func parseError(data []byte) error {
	if len(data) < 4 {
		return errors.New("netlink: short error message")
	}
	code := int32(binary.NativeEndian.Uint32(data[0:4]))
	if code == 0 {
		return nil
	}
	e := &Error{Errno: syscall.Errno(-code)}
	// With NETLINK_CAP_ACK the original header follows without its
	// payload; extended-ack attributes come after it.
	if len(data) >= 4+unix.SizeofNlMsghdr {
		for _, a := range ParseAttrs(data[4+unix.SizeofNlMsghdr:]) {
			if a.Type == unix.NLMSGERR_ATTR_MSG {
				e.Msg = cString(a.Data)
			}
		}
	}
	return e
}

func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

func appendHeader(b []byte, payload int, typ, flags uint16, seq uint32) []byte {
	b = binary.NativeEndian.AppendUint32(b, uint32(unix.SizeofNlMsghdr+payload))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = binary.NativeEndian.AppendUint16(b, flags)
	b = binary.NativeEndian.AppendUint32(b, seq)
	return binary.NativeEndian.AppendUint32(b, 0) // port ID: the kernel's
}

func align(n int) int { return (n + 3) &^ 3 }

func pad(b []byte) []byte {
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}
