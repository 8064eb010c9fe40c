package microlink

import (
	"bytes"
	"context"
	"log/slog"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// envBareTLS marks the test binary re-executed as on a system without a
// CA bundle.
const envBareTLS = "MICROLINK_TEST_BARE_TLS"

// TestTLSRootsOnBareSystem: on a system without CA certificates, a node
// whose control server speaks https says in one log line that it verifies
// servers with its built-in roots.
func TestTLSRootsOnBareSystem(t *testing.T) {
	if os.Getenv(envBareTLS) == "" {
		dir := t.TempDir()
		empty := dir + "/empty.pem"
		os.WriteFile(empty, nil, 0o644)
		cmd := exec.Command(os.Args[0], "-test.run=^TestTLSRootsOnBareSystem$", "-test.v")
		cmd.Env = append(os.Environ(), envBareTLS+"=1", "SSL_CERT_FILE="+empty, "SSL_CERT_DIR="+dir)
		out, err := cmd.CombinedOutput()
		if err != nil || !bytes.Contains(out, []byte("--- PASS: TestTLSRootsOnBareSystem")) {
			t.Fatalf("bare system: %v\n%s", err, out)
		}
		return
	}
	srv := httptest.NewTLSServer(nil) // a certificate no built-in root signed
	defer srv.Close()
	var logs syncBuffer
	n, err := New(Config{ControlURL: srv.URL, Port: -1, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	n.Start(ctx)
	cancel()
	n.Close()
	got := logs.String()
	if c := strings.Count(got, "tls: trusted roots"); c != 1 || !strings.Contains(got, `pool="built-in ISRG Root X1, ISRG Root X2 only (the system has none)"`) {
		t.Fatalf("%d lines about the roots:\n%s", c, got)
	}
	if !strings.Contains(got, "certificate signed by unknown authority") {
		t.Fatalf("the test server's certificate was accepted:\n%s", got)
	}
}
