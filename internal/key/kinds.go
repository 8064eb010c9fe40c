package key

import (
	"encoding/base64"
	"encoding/hex"
)

// MachinePublic is a machine's public key ("mkey:").
type MachinePublic Public

// NodePublic is a node's public key ("nodekey:"), also its WireGuard and DERP identity.
type NodePublic Public

// DiscoPublic is a node's disco public key ("discokey:").
type DiscoPublic Public

func (k MachinePublic) String() string { return MachinePublicPrefix + hex.EncodeToString(k[:]) }
func (k NodePublic) String() string    { return NodePublicPrefix + hex.EncodeToString(k[:]) }
func (k DiscoPublic) String() string   { return DiscoPublicPrefix + hex.EncodeToString(k[:]) }

// IsZero reports whether the key is all zeros.
func (k MachinePublic) IsZero() bool { return Public(k).IsZero() }

// IsZero reports whether the key is all zeros.
func (k NodePublic) IsZero() bool { return Public(k).IsZero() }

// IsZero reports whether the key is all zeros.
func (k DiscoPublic) IsZero() bool { return Public(k).IsZero() }

// ShortString returns the log form "[AbCdE]".
func (k NodePublic) ShortString() string { return shortString(Public(k)) }

// ShortString returns the log form "[AbCdE]".
func (k DiscoPublic) ShortString() string { return shortString(Public(k)) }

func (k MachinePublic) MarshalText() ([]byte, error) { return []byte(k.String()), nil }
func (k NodePublic) MarshalText() ([]byte, error)    { return []byte(k.String()), nil }
func (k DiscoPublic) MarshalText() ([]byte, error)   { return []byte(k.String()), nil }

func (k *MachinePublic) UnmarshalText(b []byte) error {
	raw, err := parseHex(b, MachinePublicPrefix)
	if err == nil {
		*k = raw
	}
	return err
}

func (k *NodePublic) UnmarshalText(b []byte) error {
	raw, err := parseHex(b, NodePublicPrefix)
	if err == nil {
		*k = raw
	}
	return err
}

func (k *DiscoPublic) UnmarshalText(b []byte) error {
	raw, err := parseHex(b, DiscoPublicPrefix)
	if err == nil {
		*k = raw
	}
	return err
}

// ParseMachinePublic parses "mkey:<64 hex>".
func ParseMachinePublic(s string) (MachinePublic, error) {
	var k MachinePublic
	return k, k.UnmarshalText([]byte(s))
}

// ParseNodePublic parses "nodekey:<64 hex>".
func ParseNodePublic(s string) (NodePublic, error) {
	var k NodePublic
	return k, k.UnmarshalText([]byte(s))
}

// ParseDiscoPublic parses "discokey:<64 hex>".
func ParseDiscoPublic(s string) (DiscoPublic, error) {
	var k DiscoPublic
	return k, k.UnmarshalText([]byte(s))
}

// ParsePrivate parses "privkey:<64 hex>".
func ParsePrivate(s string) (Private, error) {
	var k Private
	return k, k.UnmarshalText([]byte(s))
}

// MachinePublic returns the public key of k used as a machine key.
func (k Private) MachinePublic() MachinePublic { return MachinePublic(k.Public()) }

// NodePublic returns the public key of k used as a node key.
func (k Private) NodePublic() NodePublic { return NodePublic(k.Public()) }

// DiscoPublic returns the public key of k used as a disco key.
func (k Private) DiscoPublic() DiscoPublic { return DiscoPublic(k.Public()) }

func shortString(p Public) string {
	return "[" + base64.StdEncoding.EncodeToString(p[:])[:5] + "]"
}
