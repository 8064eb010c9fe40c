package tcp

import (
	"log/slog"
	"time"
)

// A Corker holds what is sent between Cork and Uncork and sends it at
// Uncork.
type Corker interface {
	Cork()
	Uncork()
}

// Config configures a Stack. Zero fields take the defaults shown.
type Config struct {
	// Output sends one complete IP packet. The packet is only valid
	// during the call. It must not call back into the Stack.
	Output func(ipPacket []byte) error
	// Batch, if set, returns what can hold a burst of Output calls and
	// send them together (a UDP socket that sends many datagrams in one
	// system call), or nil. The stack corks it around the packets of a
	// connection that go out at once: a chunk released by pacing, the
	// segments an ACK lets go.
	Batch  func() Corker
	Logger *slog.Logger

	// MTU is the largest IP packet sent or expected: 1280, giving an MSS
	// of 1240 for IPv4 and 1220 for IPv6.
	MTU int
	// MaxConns bounds the connections of the stack in every state but
	// TIME-WAIT: 256 (an idle connection costs about 2 KiB). An eighth of
	// them (none below 8) are kept for Dial: connections from peers may
	// take only the rest.
	MaxConns int
	// MaxHalfOpen bounds the connections from peers whose handshake is
	// not complete: 16. Beyond it, SYNs are answered with SYN cookies,
	// which hold no state until the peer's ACK returns.
	MaxHalfOpen int
	// HalfOpenTimeout is how long such a connection waits for the
	// handshake to complete, resending its SYN-ACK: 10 s.
	HalfOpenTimeout time.Duration
	// SendBuffer and ReceiveBuffer are the largest send and receive
	// buffers of a connection, 4 KiB to 64 MiB: 4 MiB each, as Linux's
	// send buffer (its receive buffer goes to 6 MiB). Buffers start at
	// 64 KiB (or the largest, if smaller) and grow with the measured
	// bandwidth-delay product; they take memory only for the data they
	// hold, and go back to the start size when the connection is idle.
	// The receive buffer bounds the window the connection advertises.
	SendBuffer, ReceiveBuffer int
	// MemoryLimit bounds how far the buffers of all connections together
	// grow beyond their start: 16 MiB. Buffers grow only while there is
	// room.
	MemoryLimit int
	// Backlog bounds the established connections of a listener waiting
	// for Accept: 16. While they are that many, further SYNs are dropped
	// and handshakes wait, as in Linux.
	Backlog int
	// TimeWait is how long the four-tuple of a closed connection lingers
	// in TIME-WAIT, acknowledging a retransmitted FIN of the peer: 30 s.
	// It holds no connection slot; at most 4 × MaxConns tuples are kept,
	// the oldest dropped first.
	TimeWait time.Duration
	// FinWait2Timeout is how long a connection closed by Close waits for
	// the peer's FIN: 10 s. One shut down by CloseWrite and still read
	// waits as long as keep-alives find the peer.
	FinWait2Timeout time.Duration
	// MinRTO and MaxRTO bound the retransmission timeout: 200 ms and 60 s.
	MinRTO, MaxRTO time.Duration
	// RetransmitTimeout is how long data may go unacknowledged while it
	// is retransmitted (or zero-window probes go unanswered) before the
	// connection fails with ErrTimeout: 15 minutes, about what Linux
	// takes. A SYN is sent 7 times (about 2 minutes) at most.
	RetransmitTimeout time.Duration
	// KeepAliveIdle is how long an established connection may hear
	// nothing from its peer before it sends keep-alive probes: 60 s; a
	// negative value turns keep-alives off. KeepAliveInterval is the time
	// between probes (15 s), and after KeepAliveCount unanswered probes
	// (4) the connection fails with ErrTimeout, so a vanished peer is
	// noticed within about two minutes.
	KeepAliveIdle, KeepAliveInterval time.Duration
	KeepAliveCount                   int
	// CongestionControl is "cubic" (RFC 9438, the default) or "newreno"
	// (RFC 5681, RFC 6582).
	CongestionControl string

	synRetries int // for tests: SYNs resent before Dial fails
}

// Bounds of the buffer sizes.
const (
	MinBuffer = 4 << 10
	MaxBuffer = 64 << 20

	// initialBuffer is where a connection's buffer limits start.
	initialBuffer = 64 << 10
)

func (c *Config) setDefaults() {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.MTU, 1280)
	c.MTU = min(c.MTU, chunkSize)
	def(&c.MaxConns, 256)
	def(&c.MaxHalfOpen, 16)
	def(&c.SendBuffer, 4<<20)
	def(&c.ReceiveBuffer, 4<<20)
	def(&c.MemoryLimit, 16<<20)
	def(&c.Backlog, 16)
	c.SendBuffer = min(max(c.SendBuffer, MinBuffer), MaxBuffer)
	c.ReceiveBuffer = min(max(c.ReceiveBuffer, MinBuffer), MaxBuffer)
	defDur(&c.HalfOpenTimeout, 10*time.Second)
	defDur(&c.TimeWait, 30*time.Second)
	defDur(&c.FinWait2Timeout, 10*time.Second)
	defDur(&c.MinRTO, 200*time.Millisecond)
	defDur(&c.MaxRTO, 60*time.Second)
	defDur(&c.RetransmitTimeout, 15*time.Minute)
	if c.KeepAliveIdle == 0 {
		c.KeepAliveIdle = 60 * time.Second
	}
	defDur(&c.KeepAliveInterval, 15*time.Second)
	def(&c.KeepAliveCount, 4)
	def(&c.synRetries, 6)
	if c.CongestionControl == "" {
		c.CongestionControl = "cubic"
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}
