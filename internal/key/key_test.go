package key

import (
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"
)

// RFC 7748 section 6.1 test vector (Alice).
func TestPublicGolden(t *testing.T) {
	priv, _ := hex.DecodeString("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
	want := "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
	var k Private
	copy(k[:], priv)
	if got := k.Public().Hex(); got != want {
		t.Fatalf("public = %s, want %s", got, want)
	}
}

func TestSharedSecretGolden(t *testing.T) {
	a, _ := hex.DecodeString("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
	bpub, _ := hex.DecodeString("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
	var k Private
	var p Public
	copy(k[:], a)
	copy(p[:], bpub)
	s, err := k.SharedSecret(p)
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(s[:]); got != "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742" {
		t.Fatalf("shared = %s", got)
	}
	if _, err := k.SharedSecret(Public{}); err == nil {
		t.Fatal("low-order point accepted")
	}
}

func TestNewPrivateClamped(t *testing.T) {
	k := NewPrivate()
	if k[0]&7 != 0 || k[31]&128 != 0 || k[31]&64 == 0 {
		t.Fatalf("not clamped: %x", k)
	}
	if k.Equal(NewPrivate()) {
		t.Fatal("two fresh keys are equal")
	}
}

func TestTextRoundTrip(t *testing.T) {
	k := NewPrivate()
	for _, tc := range []struct {
		text  string
		parse func(string) (string, error)
	}{
		{k.MachinePublic().String(), func(s string) (string, error) { v, err := ParseMachinePublic(s); return v.String(), err }},
		{k.NodePublic().String(), func(s string) (string, error) { v, err := ParseNodePublic(s); return v.String(), err }},
		{k.DiscoPublic().String(), func(s string) (string, error) { v, err := ParseDiscoPublic(s); return v.String(), err }},
		{k.String(), func(s string) (string, error) { v, err := ParsePrivate(s); return v.String(), err }},
	} {
		got, err := tc.parse(tc.text)
		if err != nil || got != tc.text {
			t.Errorf("round trip %q = %q, %v", tc.text, got, err)
		}
		upper := tc.text[:strings.Index(tc.text, ":")+1] + strings.ToUpper(tc.text[strings.Index(tc.text, ":")+1:])
		if got, err := tc.parse(upper); err != nil || got != tc.text {
			t.Errorf("uppercase %q = %q, %v", upper, got, err)
		}
	}
}

func TestParseErrors(t *testing.T) {
	good := NewPrivate().NodePublic().String()
	for _, s := range []string{
		"", "nodekey:", good[len("nodekey:"):], "mkey:" + good[len("nodekey:"):],
		good + "0", good[:len(good)-1], strings.Replace(good, good[10:11], "z", 1),
	} {
		if _, err := ParseNodePublic(s); err == nil {
			t.Errorf("ParseNodePublic(%q) accepted", s)
		}
	}
}

func TestJSON(t *testing.T) {
	type msg struct {
		Node  NodePublic
		Disco DiscoPublic
	}
	in := msg{NewPrivate().NodePublic(), NewPrivate().DiscoPublic()}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"nodekey:`) || !strings.Contains(string(b), `"discokey:`) {
		t.Fatalf("json = %s", b)
	}
	var out msg
	if err := json.Unmarshal(b, &out); err != nil || out != in {
		t.Fatalf("round trip: %v %+v", err, out)
	}
	zero, _ := json.Marshal(msg{})
	if !strings.Contains(string(zero), "nodekey:"+strings.Repeat("0", 64)) {
		t.Fatalf("zero key json = %s", zero)
	}
}

func TestShortString(t *testing.T) {
	var k NodePublic
	if got := k.ShortString(); got != "[AAAAA]" {
		t.Fatalf("short = %s", got)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(NewPrivate().NodePublic().String())
	f.Add("nodekey:zz")
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParseNodePublic(s)
		if err == nil && !strings.EqualFold(k.String(), s) {
			t.Fatalf("parse(%q) = %s", s, k)
		}
	})
}
