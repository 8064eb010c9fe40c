package disco

import (
	"reflect"
	"testing"
)

func FuzzParse(f *testing.F) {
	for _, tc := range golden {
		f.Add(unhex(tc.hex))
	}
	f.Add([]byte{})
	f.Add([]byte{0x03, 0x00, 1, 2})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		if err != nil {
			if m != nil {
				t.Fatalf("error %v with message %+v", err, m)
			}
			return
		}
		if b[1] != version0 {
			return // future versions parse to empty messages
		}
		// What parses re-encodes to something that parses the same.
		again, err := Parse(m.AppendMarshal(nil))
		if err != nil {
			t.Fatalf("re-parse of %+v: %v", m, err)
		}
		if !reflect.DeepEqual(again, m) {
			t.Fatalf("round trip %+v != %+v", again, m)
		}
	})
}

func FuzzOpen(f *testing.F) {
	alice, bob := rfcKeys()
	a, b := NewSealer(alice, 0), NewSealer(bob, 0)
	f.Add(a.Seal(nil, b.Public(), &Ping{TxID: txid}))
	f.Add(a.Seal(nil, b.Public(), &CallMeMaybe{}))
	f.Add([]byte(Magic))
	f.Fuzz(func(t *testing.T, pkt []byte) {
		src, ok := Source(pkt)
		if !ok {
			return
		}
		m, ok := b.Open(pkt, src)
		if ok && m == nil {
			t.Fatal("opened without a message")
		}
	})
}
