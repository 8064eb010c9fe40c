// Package tlsroots gives the certificate authorities microlink verifies
// TLS servers with (the /key fetch, the ts2021 dial over TLS, DERP): the
// system's roots, completed with built-in copies of the roots that
// Tailscale's control and DERP servers chain to, ISRG Root X1 and X2 of
// Let's Encrypt. A scratch container or a bare router without a CA bundle
// can thus still reach Tailscale's servers, as tailscaled can.
//
// The choice is made once per process, at the first call of Pool, and
// logged at the first call that has a logger.
package tlsroots

import (
	"crypto/x509"
	_ "embed"
	"encoding/pem"
	"fmt"
	"log/slog"
	"strings"
	"sync"
)

// The certificates, as published by Let's Encrypt and shipped in CA
// bundles (sha256 96bcec06…08c6 and 69729b8e…1470).
var (
	//go:embed isrg-root-x1.pem
	isrgRootX1 []byte
	//go:embed isrg-root-x2.pem
	isrgRootX2 []byte
)

var chosen struct {
	once   sync.Once
	pool   *x509.CertPool
	source string // for the log line

	logMu  sync.Mutex
	logged bool
}

// Pool returns the roots to verify TLS servers with: the system's, with
// the built-in roots added if the system lacks them, or the built-in roots
// alone if the system has none that can be loaded. The first call with a
// non-nil logger logs which.
func Pool(logger *slog.Logger) *x509.CertPool {
	chosen.once.Do(func() {
		sys, err := x509.SystemCertPool()
		chosen.pool, chosen.source = choose(sys, err, Builtin())
	})
	if logger != nil {
		chosen.logMu.Lock()
		first := !chosen.logged
		chosen.logged = true
		chosen.logMu.Unlock()
		if first {
			logger.Info("tls: trusted roots", "pool", chosen.source)
		}
	}
	return chosen.pool
}

// Builtin returns the built-in roots.
func Builtin() []*x509.Certificate {
	return []*x509.Certificate{mustParse(isrgRootX1), mustParse(isrgRootX2)}
}

func mustParse(pemData []byte) *x509.Certificate {
	b, _ := pem.Decode(pemData)
	if b == nil {
		panic("tlsroots: built-in certificate is not PEM")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		panic("tlsroots: built-in certificate: " + err.Error())
	}
	return c
}

// choose returns the pool to use given the system's (sys, or the error
// loading it) and the built-in roots, with a description for the log.
func choose(sys *x509.CertPool, sysErr error, builtin []*x509.Certificate) (*x509.CertPool, string) {
	if sysErr != nil || sys == nil || sys.Equal(x509.NewCertPool()) {
		p := x509.NewCertPool()
		for _, c := range builtin {
			p.AddCert(c)
		}
		why := "the system has none"
		if sysErr != nil {
			why = "the system's cannot be loaded: " + sysErr.Error()
		}
		return p, fmt.Sprintf("built-in %s only (%s)", names(builtin), why)
	}
	var missing []*x509.Certificate
	for _, c := range builtin {
		if !trusts(sys, c) {
			missing = append(missing, c)
		}
	}
	if len(missing) == 0 {
		return sys, "system"
	}
	p := sys.Clone()
	for _, c := range missing {
		p.AddCert(c)
	}
	return p, fmt.Sprintf("system, plus built-in %s (missing from the system's)", names(missing))
}

// trusts reports whether pool holds the self-signed root.
func trusts(pool *x509.CertPool, root *x509.Certificate) bool {
	_, err := root.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err == nil
}

func names(certs []*x509.Certificate) string {
	var s []string
	for _, c := range certs {
		s = append(s, c.Subject.CommonName)
	}
	return strings.Join(s, ", ")
}
