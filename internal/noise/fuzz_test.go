package noise

import (
	"bytes"
	"io"
	"testing"
)

// FuzzReadRecord feeds arbitrary bytes after a valid handshake into the
// record reader. It must never panic, and any plaintext it returns must be
// a prefix of the known plaintext when the stream starts with the golden
// records.
func FuzzReadRecord(f *testing.F) {
	recs := mustHex(f, goldenRecords)
	f.Add(recs)
	f.Add(recs[:20])
	f.Add([]byte{4, 0, 0})
	f.Add([]byte{4, 0xff, 0xff})
	f.Add([]byte{3, 0, 1, 'x'})
	f.Add(append(bytes.Clone(recs), 4, 0, 16))
	f.Fuzz(func(t *testing.T, stream []byte) {
		c := clientWithStream(t, stream)
		got, _ := io.ReadAll(io.LimitReader(c, 1<<20))
		if !bytes.HasPrefix([]byte("server hellotwothree"), got) {
			t.Fatalf("read unexpected plaintext %q", got)
		}
	})
}

// FuzzFinish feeds arbitrary handshake responses to the initiator.
func FuzzFinish(f *testing.F) {
	f.Add(mustHex(f, goldenResponse))
	f.Add([]byte{3, 0, 2, 'h', 'i'})
	f.Add([]byte{2, 0, 48})
	f.Fuzz(func(t *testing.T, resp []byte) {
		machine, server := mustKey(t, goldenMachine), mustKey(t, goldenServer)
		h, err := newInitiator(machine, server.MachinePublic(), goldenVersion, mustKey(t, goldenClientEph))
		if err != nil {
			t.Fatal(err)
		}
		c, err := h.Finish(&recorder{r: bytes.NewReader(resp)})
		if err == nil && !bytes.HasPrefix(resp, mustHex(t, goldenResponse)) {
			t.Fatalf("accepted forged response %x", resp)
		}
		_ = c
	})
}
