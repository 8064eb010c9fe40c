package wireguard

import "time"

// Protocol constants from the WireGuard specification.
const (
	RekeyAfterMessages     = 1 << 60
	RejectAfterMessages    = 1<<64 - 1<<13 - 1
	RekeyAfterTime         = 120 * time.Second
	RejectAfterTime        = 180 * time.Second
	RekeyAttemptTime       = 90 * time.Second
	RekeyTimeout           = 5 * time.Second
	RekeyTimeoutJitterMax  = 334 * time.Millisecond
	KeepaliveTimeout       = 10 * time.Second
	CookieRefreshTime      = 120 * time.Second
	HandshakeInitationRate = time.Second / 50
	PaddingMultiple        = 16

	// maxHandshakeAttempts is how many times an unanswered initiation is
	// retransmitted before the device gives up: RekeyAttemptTime / RekeyTimeout.
	maxHandshakeAttempts = int(RekeyAttemptTime / RekeyTimeout)

	// unsentRetry is how soon an initiation the transport could not send
	// is tried again.
	unsentRetry = 250 * time.Millisecond
)

// Implementation constants.
const (
	// DefaultHandshakeLoadLimit is the number of handshake messages per
	// second above which the device considers itself under load and demands
	// a valid mac2 (answering with cookie replies).
	DefaultHandshakeLoadLimit = 64

	// underLoadAfterTime is how long the device stays under load once the
	// limit was exceeded.
	underLoadAfterTime = time.Second

	// maxStaged is how many packets are queued per peer while a handshake
	// is in progress; older packets are dropped to make room.
	maxStaged = 8

	// poolSize bounds the number of idle packet buffers kept by a device.
	poolSize = 8

	// bufferSize is the size of a pooled buffer. It holds a transport
	// message for an inner packet of up to bufferSize-32 bytes; larger
	// packets use a buffer of their own.
	bufferSize = 2048
)
