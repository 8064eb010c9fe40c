package microlink

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/microlink-go/microlink/internal/netmap"
	"github.com/microlink-go/microlink/internal/tailcfg"
)

// mapMessage encodes resp as control sends it and decodes it as the node
// does.
func mapMessage(tb testing.TB, resp *tailcfg.MapResponse) *netmap.Message {
	tb.Helper()
	b, err := json.Marshal(resp)
	if err != nil {
		tb.Fatal(err)
	}
	var d netmap.Decoder
	msg, err := d.Decode(bytes.NewReader(b))
	if err != nil {
		tb.Fatal(err)
	}
	return msg
}

// onMapResponse applies resp as if control had sent it.
func (n *Node) onMapResponse(resp *tailcfg.MapResponse) {
	b, err := json.Marshal(resp)
	if err != nil {
		panic(err)
	}
	var d netmap.Decoder
	msg, err := d.Decode(bytes.NewReader(b))
	if err != nil {
		panic(err)
	}
	n.onMapMessage(msg)
}
