package wireguard

import "time"

// An RxBatch handles the messages of one read from the network, as
// ReceiveFrom would one by one, but reads the clock once for all the
// transport messages among them: a read brings up to some hundred, and
// the clock costs as much as the rest of their handling but the
// decryption. It belongs to one goroutine, such as a socket's read loop.
type RxBatch struct {
	d   *Device
	now time.Time // zero until a transport message of this read comes
}

// NewRxBatch returns a batch for d.
func (d *Device) NewRxBatch() *RxBatch { return &RxBatch{d: d} }

// Add handles msg, from src, as ReceiveFrom does.
func (b *RxBatch) Add(msg, src []byte) { b.d.receive(msg, src, &b.now) }

// Flush ends the read: the next message is of another.
func (b *RxBatch) Flush() { b.now = time.Time{} }
