package microlink

import (
	"strings"
	"testing"
	"time"
)

func TestConfigDefaults(t *testing.T) {
	c, err := Config{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.ControlURL != DefaultControlURL || c.Port != DefaultPort || c.Hostname == "" || c.Logger == nil {
		t.Fatalf("defaults = %+v", c)
	}
}

func TestConfigApplyEnv(t *testing.T) {
	t.Setenv("TS_AUTHKEY", "tskey-auth-env")
	t.Setenv("TS_CONTROL_URL", "http://127.0.0.1:9911")
	t.Setenv("TS_HOSTNAME", "envhost")
	t.Setenv("TS_STATE_DIR", "/tmp/x")
	t.Setenv("TS_PORT", " 5555 ")
	// New alone does not read the environment.
	c, err := Config{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.AuthKey != "" || c.ControlURL != DefaultControlURL || c.Hostname == "envhost" || c.StateDir != "" || c.Port != DefaultPort {
		t.Fatalf("the library read the environment: %+v", c)
	}
	var e Config
	if err := e.ApplyEnv(); err != nil {
		t.Fatal(err)
	}
	if e.AuthKey != "tskey-auth-env" || e.ControlURL != "http://127.0.0.1:9911" || e.Hostname != "envhost" || e.StateDir != "/tmp/x" || e.Port != 5555 {
		t.Fatalf("env = %+v", e)
	}
	// Explicit fields win over the environment.
	e = Config{AuthKey: "k", Hostname: "h", Port: 7}
	if err := e.ApplyEnv(); err != nil || e.AuthKey != "k" || e.Hostname != "h" || e.Port != 7 || e.StateDir != "/tmp/x" {
		t.Fatalf("explicit = %+v, %v", e, err)
	}
	t.Setenv("TS_PORT", "fast")
	if err := new(Config).ApplyEnv(); err == nil || !strings.Contains(err.Error(), "TS_PORT") {
		t.Fatalf("bad TS_PORT: %v", err)
	}
}

func TestConfigInvalid(t *testing.T) {
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
		{Config{TCP: TCPConfig{ReceiveBuffer: 128 << 20}}, "TCP.ReceiveBuffer"},
		{Config{TCP: TCPConfig{ReceiveBuffer: -1}}, "TCP.ReceiveBuffer"},
		{Config{AcceptDNS: true}, "AcceptDNS (--accept-dns) needs TUN mode"},
		{Config{TCP: TCPConfig{MemoryLimit: 1000}}, "TCP.MemoryLimit"},
		{Config{TCP: TCPConfig{RetransmitTimeout: -time.Second}}, "TCP.RetransmitTimeout"},
		{Config{TCP: TCPConfig{CongestionControl: "bbr"}}, "TCP.CongestionControl"},
	} {
		_, err := tc.c.withDefaults()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err = %v, want %q", tc.c, err, tc.want)
		}
	}
}

func TestTCPConfigToStack(t *testing.T) {
	c := TCPConfig{MaxConns: 8, SendBuffer: 16 << 10, ReceiveBuffer: 32 << 10, KeepAlive: -1,
		MemoryLimit: 1 << 20, RetransmitTimeout: time.Minute, CongestionControl: "newreno"}
	if err := c.validate(); err != nil {
		t.Fatal(err)
	}
	sc := c.stackConfig()
	if sc.MaxConns != 8 || sc.SendBuffer != 16<<10 || sc.ReceiveBuffer != 32<<10 || sc.KeepAliveIdle != -1 ||
		sc.MemoryLimit != 1<<20 || sc.RetransmitTimeout != time.Minute || sc.CongestionControl != "newreno" {
		t.Fatalf("stack config %+v from %+v", sc, c)
	}
	if err := (TCPConfig{}).validate(); err != nil {
		t.Fatalf("zero TCPConfig: %v", err)
	}
}
