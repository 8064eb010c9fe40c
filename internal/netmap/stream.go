package netmap

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/microlink-go/microlink/internal/tailcfg"
)

// ApplyJSON decodes one JSON MapResponse from r and applies it like Apply.
// It decodes the Peers and PeersChanged arrays one node at a time straight
// into compact peers, so a full netmap of a large tailnet never exists as
// wire nodes in memory. A malformed message changes nothing.
func (m *Map) ApplyJSON(r io.Reader) (Changes, error) {
	resp, d, err := decodeStreaming(r)
	if err != nil {
		return Changes{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.applyLocked(resp, d)
}

// decodeStreaming reads a MapResponse object. Peers and PeersChanged become
// compact peers; every other member is copied verbatim into a smaller JSON
// object, in order, and decoded with encoding/json, so they follow the same
// rules (case-insensitive names, last duplicate wins) as json.Unmarshal.
func decodeStreaming(r io.Reader) (*tailcfg.MapResponse, *decoded, error) {
	dec := json.NewDecoder(r)
	if err := expectDelim(dec, '{'); err != nil {
		return nil, nil, err
	}
	var rest bytes.Buffer
	rest.WriteByte('{')
	d := new(decoded)
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, nil, decodeErr(err)
		}
		name, ok := t.(string)
		if !ok {
			return nil, nil, fmt.Errorf("netmap: decoding MapResponse: unexpected %v", t)
		}
		switch {
		case strings.EqualFold(name, "Peers"):
			d.full, d.hasFull, err = decodeNodes(dec)
		case strings.EqualFold(name, "PeersChanged"):
			d.changed, _, err = decodeNodes(dec)
		default:
			var raw json.RawMessage
			if err = dec.Decode(&raw); err == nil {
				if rest.Len() > 1 {
					rest.WriteByte(',')
				}
				nb, _ := json.Marshal(name)
				rest.Write(nb)
				rest.WriteByte(':')
				rest.Write(raw)
			}
		}
		if err != nil {
			return nil, nil, decodeErr(err)
		}
	}
	if err := expectDelim(dec, '}'); err != nil {
		return nil, nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, nil, errors.New("netmap: decoding MapResponse: data after the object")
	}
	rest.WriteByte('}')
	resp := new(tailcfg.MapResponse)
	if err := json.Unmarshal(rest.Bytes(), resp); err != nil {
		return nil, nil, decodeErr(err)
	}
	return resp, d, nil
}

// decodeNodes reads a JSON array of nodes (or null) and converts each to a
// compact peer. nonEmpty reports whether the array had any element.
func decodeNodes(dec *json.Decoder) (peers []*Peer, nonEmpty bool, err error) {
	t, err := dec.Token()
	if err != nil {
		return nil, false, err
	}
	if t == nil {
		return nil, false, nil
	}
	if t != json.Delim('[') {
		return nil, false, fmt.Errorf("node list is %v, not an array", t)
	}
	for dec.More() {
		nonEmpty = true
		var n *tailcfg.Node
		if err := dec.Decode(&n); err != nil {
			return nil, false, err
		}
		if n != nil {
			peers = append(peers, compactPeer(n))
		}
	}
	_, err = dec.Token() // ']'
	return peers, nonEmpty, err
}

func expectDelim(dec *json.Decoder, want json.Delim) error {
	t, err := dec.Token()
	if err != nil {
		return decodeErr(err)
	}
	if t != want {
		return fmt.Errorf("netmap: decoding MapResponse: got %v, want %v", t, want)
	}
	return nil
}

func decodeErr(err error) error {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("netmap: decoding MapResponse: %w", err)
}
