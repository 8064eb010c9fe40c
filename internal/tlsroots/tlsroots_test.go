package tlsroots

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"log/slog"
	"math/big"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestBuiltin: the built-in roots are ISRG Root X1 and X2, byte for byte
// the certificates Let's Encrypt publishes (by their SHA-256), and valid
// now.
func TestBuiltin(t *testing.T) {
	want := map[string]string{
		"ISRG Root X1": "96bcec06264976f37460779acf28c5a7cfe8a3c0aae11a8ffcee05c0bddf08c6",
		"ISRG Root X2": "69729b8e15a86efc177a57afb7171dfc64add28c2fca8cf1507e34453ccb1470",
	}
	certs := Builtin()
	if len(certs) != len(want) {
		t.Fatalf("%d built-in roots, want %d", len(certs), len(want))
	}
	for _, c := range certs {
		sum := sha256.Sum256(c.Raw)
		if got := hex.EncodeToString(sum[:]); got != want[c.Subject.CommonName] {
			t.Errorf("%s: sha256 %s, want %s", c.Subject.CommonName, got, want[c.Subject.CommonName])
		}
		if !c.IsCA || !bytes.Equal(c.RawSubject, c.RawIssuer) {
			t.Errorf("%s is not a self-signed CA", c.Subject.CommonName)
		}
		if now := time.Now(); now.Before(c.NotBefore) || now.After(c.NotAfter) {
			t.Errorf("%s is not valid now (%v to %v)", c.Subject.CommonName, c.NotBefore, c.NotAfter)
		}
	}
}

// testCA returns a self-signed CA certificate and its key.
func testCA(t *testing.T, name string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, k
}

// leaf returns a server certificate for host signed by ca.
func leaf(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, host string) *x509.Certificate {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

func verifies(pool *x509.CertPool, c *x509.Certificate, host string) bool {
	_, err := c.Verify(x509.VerifyOptions{Roots: pool, DNSName: host})
	return err == nil
}

// TestChoose: with no system roots, or roots that cannot be loaded, the
// built-in ones are used alone; system roots that lack them are
// completed (without changing the system's pool); system roots that have
// them are used as they are.
func TestChoose(t *testing.T) {
	builtin := Builtin()
	x1, x2 := builtin[0], builtin[1]
	other, otherKey := testCA(t, "Some Other CA")
	otherLeaf := leaf(t, other, otherKey, "server.example")

	p, desc := choose(nil, errors.New("no such file"), builtin)
	if !trusts(p, x1) || !trusts(p, x2) || !strings.Contains(desc, "built-in ISRG Root X1, ISRG Root X2 only") || !strings.Contains(desc, "no such file") {
		t.Fatalf("system roots fail to load: %q", desc)
	}
	p, desc = choose(x509.NewCertPool(), nil, builtin)
	if !trusts(p, x1) || !trusts(p, x2) || desc != "built-in ISRG Root X1, ISRG Root X2 only (the system has none)" {
		t.Fatalf("no system roots: %q", desc)
	}
	if verifies(p, otherLeaf, "server.example") {
		t.Fatal("the built-in pool trusts another CA")
	}

	sys := x509.NewCertPool()
	sys.AddCert(other)
	p, desc = choose(sys, nil, builtin)
	if !trusts(p, x1) || !trusts(p, x2) || !verifies(p, otherLeaf, "server.example") {
		t.Fatalf("system roots without ISRG: %q", desc)
	}
	if desc != "system, plus built-in ISRG Root X1, ISRG Root X2 (missing from the system's)" {
		t.Fatalf("system roots without ISRG: %q", desc)
	}
	if trusts(sys, x1) {
		t.Fatal("the system's pool was changed")
	}

	sys.AddCert(x1)
	p, desc = choose(sys, nil, builtin)
	if !trusts(p, x2) || desc != "system, plus built-in ISRG Root X2 (missing from the system's)" {
		t.Fatalf("system roots with X1 only: %q", desc)
	}
	sys.AddCert(x2)
	if p, desc = choose(sys, nil, builtin); p != sys || desc != "system" {
		t.Fatalf("system roots with both: %q", desc)
	}
}

// envBare marks the test binary re-executed as on a system without a CA
// bundle.
const envBare = "MICROLINK_TLSROOTS_TEST_BARE"

// TestPoolOnBareSystem runs Pool in a process whose system roots are an
// empty file and an empty directory, as in a scratch container: it logs
// one line saying it uses the built-in roots, and they verify.
func TestPoolOnBareSystem(t *testing.T) {
	if os.Getenv(envBare) != "" {
		var logs bytes.Buffer
		logger := slog.New(slog.NewTextHandler(&logs, nil))
		p := Pool(logger)
		Pool(logger)
		Pool(nil)
		for _, c := range Builtin() {
			if !trusts(p, c) {
				t.Errorf("the pool does not trust %s", c.Subject.CommonName)
			}
		}
		if n := strings.Count(logs.String(), "\n"); n != 1 || !strings.Contains(logs.String(), `pool="built-in ISRG Root X1, ISRG Root X2 only (the system has none)"`) {
			t.Errorf("%d log lines:\n%s", n, logs.String())
		}
		t.Logf("%s", logs.String())
		return
	}
	dir := t.TempDir()
	empty := dir + "/empty.pem"
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestPoolOnBareSystem$", "-test.v")
	cmd.Env = append(os.Environ(), envBare+"=1", "SSL_CERT_FILE="+empty, "SSL_CERT_DIR="+dir)
	out, err := cmd.CombinedOutput()
	t.Logf("with SSL_CERT_FILE=%s SSL_CERT_DIR=%s:\n%s", empty, dir, out)
	if err != nil || !bytes.Contains(out, []byte("--- PASS: TestPoolOnBareSystem")) {
		t.Fatalf("bare system: %v", err)
	}
}

// TestPoolOnThisSystem: here, with a CA bundle, the system's roots are
// used (this machine's bundle holds both ISRG roots, or they are added).
func TestPoolOnThisSystem(t *testing.T) {
	if os.Getenv(envBare) != "" {
		t.Skip("in the bare-system process")
	}
	var logs bytes.Buffer
	p := Pool(slog.New(slog.NewTextHandler(&logs, nil)))
	sys, err := x509.SystemCertPool()
	if err != nil || sys.Equal(x509.NewCertPool()) {
		t.Skip("this machine has no CA bundle")
	}
	for _, c := range Builtin() {
		if !trusts(p, c) {
			t.Errorf("the pool does not trust %s", c.Subject.CommonName)
		}
	}
	if !strings.Contains(logs.String(), `pool=system`) {
		t.Fatalf("log: %s", logs.String())
	}
}
