package microlink

import (
	"errors"
	"net"
	"strings"
)

// ErrNotConnected is returned by operations that need the node's network
// when Start has not been called.
var ErrNotConnected = errors.New("microlink: not connected: Start has not been called")

// ErrClosed is returned by operations on a closed Node.
var ErrClosed = errors.New("microlink: node closed")

// internalPrefixes are the package names internal packages begin their
// error messages with.
var internalPrefixes = []string{
	"bufpool", "control", "derp", "disco", "h1", "h2", "key", "magicsock", "netmap", "noise",
	"packet", "state", "stun", "tailcfg", "tcp", "ts2021", "tunnel", "wireguard",
}

// publicErr returns err for a caller of the package: the prefixes of
// internal packages are taken out of its text, which should read as
// microlink's, while err stays in the chain for errors.Is and errors.As. A
// *net.OpError stays one, with its Err made public.
func publicErr(err error) error {
	if err == nil {
		return nil
	}
	var op *net.OpError
	if errors.As(err, &op) && op == err {
		c := *op
		c.Err = publicErr(op.Err)
		return &c
	}
	msg := err.Error()
	clean := stripInternal(msg)
	if clean == msg {
		return err
	}
	return &publicError{msg: clean, err: err}
}

// stripInternal removes "name: " of an internal package where it starts
// msg or follows ": ".
func stripInternal(msg string) string {
	var b strings.Builder
	for msg != "" {
		if rest, ok := cutInternal(msg); ok {
			msg = rest
			continue
		}
		i := strings.Index(msg, ": ")
		if i < 0 {
			b.WriteString(msg)
			break
		}
		b.WriteString(msg[:i+2])
		msg = msg[i+2:]
	}
	return b.String()
}

func cutInternal(s string) (string, bool) {
	for _, p := range internalPrefixes {
		if rest, ok := strings.CutPrefix(s, p+": "); ok {
			return rest, true
		}
	}
	return s, false
}

// publicError is an error reworded by publicErr.
type publicError struct {
	msg string
	err error
}

func (e *publicError) Error() string { return e.msg }
func (e *publicError) Unwrap() error { return e.err }
