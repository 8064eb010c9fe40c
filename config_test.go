package microlink

import (
	"strings"
	"testing"
)

func TestConfigDefaults(t *testing.T) {
	t.Setenv("TS_AUTHKEY", "")
	t.Setenv("TS_CONTROL_URL", "")
	t.Setenv("TS_HOSTNAME", "")
	t.Setenv("TS_STATE_DIR", "")
	t.Setenv("TS_PORT", "")
	c, err := Config{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.ControlURL != DefaultControlURL || c.Port != DefaultPort || c.Hostname == "" || c.Logger == nil {
		t.Fatalf("defaults = %+v", c)
	}
}

func TestConfigEnvFallbacks(t *testing.T) {
	t.Setenv("TS_AUTHKEY", "tskey-auth-env")
	t.Setenv("TS_CONTROL_URL", "http://127.0.0.1:9911")
	t.Setenv("TS_HOSTNAME", "envhost")
	t.Setenv("TS_STATE_DIR", "/tmp/x")
	t.Setenv("TS_PORT", "5555")
	c, err := Config{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.AuthKey != "tskey-auth-env" || c.ControlURL != "http://127.0.0.1:9911" || c.Hostname != "envhost" || c.StateDir != "/tmp/x" || c.Port != 5555 {
		t.Fatalf("env = %+v", c)
	}
	// Explicit fields win over the environment.
	c, err = Config{AuthKey: "k", Hostname: "h", Port: 7}.withDefaults()
	if err != nil || c.AuthKey != "k" || c.Hostname != "h" || c.Port != 7 {
		t.Fatalf("explicit = %+v, %v", c, err)
	}
}

func TestConfigInvalid(t *testing.T) {
	t.Setenv("TS_PORT", "")
	for _, tc := range []struct {
		c    Config
		want string
	}{
		{Config{ControlURL: "ftp://x"}, "control URL"},
		{Config{ControlURL: "http://"}, "control URL"},
		{Config{Port: 70000}, "port"},
		{Config{Port: -2}, "port"},
		{Config{Hostname: "a b"}, "hostname"},
		{Config{Hostname: strings.Repeat("a", 64)}, "hostname"},
		{Config{Tags: []string{"server"}}, "tag"},
		{Config{TCP: TCPConfig{MaxConns: -1}}, "TCP.MaxConns"},
		{Config{TCP: TCPConfig{MaxConns: 5000}}, "TCP.MaxConns"},
		{Config{TCP: TCPConfig{SendBuffer: 1024}}, "TCP.SendBuffer"},
		{Config{TCP: TCPConfig{ReceiveBuffer: 2 << 20}}, "TCP.ReceiveBuffer"},
		{Config{TCP: TCPConfig{ReceiveBuffer: -1}}, "TCP.ReceiveBuffer"},
		{Config{AcceptDNS: true}, "AcceptDNS (--accept-dns) needs TUN mode"},
	} {
		_, err := tc.c.withDefaults()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err = %v, want %q", tc.c, err, tc.want)
		}
	}
	t.Setenv("TS_PORT", "nope")
	if _, err := (Config{}).withDefaults(); err == nil || !strings.Contains(err.Error(), "TS_PORT") {
		t.Errorf("bad TS_PORT: %v", err)
	}
}

func TestTCPConfigToStack(t *testing.T) {
	c := TCPConfig{MaxConns: 8, SendBuffer: 16 << 10, ReceiveBuffer: 32 << 10, KeepAlive: -1}
	if err := c.validate(); err != nil {
		t.Fatal(err)
	}
	sc := c.stackConfig()
	if sc.MaxConns != 8 || sc.SendBuffer != 16<<10 || sc.ReceiveBuffer != 32<<10 || sc.KeepAliveIdle != -1 {
		t.Fatalf("stack config %+v from %+v", sc, c)
	}
	if err := (TCPConfig{}).validate(); err != nil {
		t.Fatalf("zero TCPConfig: %v", err)
	}
}
