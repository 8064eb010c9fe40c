package wireguard

import (
	"bytes"
	"encoding/binary"
	"time"
)

// tai64n is a TAI64N timestamp: 8 bytes of seconds since 1970 offset by
// 2^62+10 and 4 bytes of nanoseconds, both big-endian.
type tai64n [timestampSize]byte

const tai64Base = uint64(0x400000000000000a)

// tai64nWhitener clears the low bits of the nanoseconds so that a
// timestamp does not reveal the local clock with more precision than
// needed to order handshakes (about 16 ms).
const tai64nWhitener = uint32(1<<24 - 1)

func stampTAI64N(t time.Time) tai64n {
	var s tai64n
	binary.BigEndian.PutUint64(s[:], tai64Base+uint64(t.Unix()))
	binary.BigEndian.PutUint32(s[8:], uint32(t.Nanosecond())&^tai64nWhitener)
	return s
}

// after reports whether s is strictly later than o.
func (s tai64n) after(o tai64n) bool { return bytes.Compare(s[:], o[:]) > 0 }

// time returns s as a time.Time.
func (s tai64n) time() time.Time {
	sec := binary.BigEndian.Uint64(s[:]) - tai64Base
	return time.Unix(int64(sec), int64(binary.BigEndian.Uint32(s[8:])))
}
