package ts2021

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/textproto"
	"net/url"
	"time"

	"github.com/microlink-go/microlink/internal/h1"
	"github.com/microlink-go/microlink/internal/key"
	"github.com/microlink-go/microlink/internal/noise"
	"github.com/microlink-go/microlink/internal/sockmark"
	"github.com/microlink-go/microlink/internal/tlsroots"
)

// Upgrade protocol constants.
const (
	UpgradePath     = "/ts2021"
	UpgradeProtocol = "tailscale-control-protocol"
	HandshakeHeader = "X-Tailscale-Handshake"
)

// Default timing of a dial.
const (
	DefaultDialTimeout   = 10 * time.Second
	DefaultFallbackDelay = 500 * time.Millisecond
)

// Dialer makes ts2021 connections to one control server.
type Dialer struct {
	// Host is the control server's host name or IP address.
	Host string
	// HTTPPort is the port for plain-HTTP upgrades, or "" for none.
	HTTPPort string
	// HTTPSPort is the port for TLS upgrades, or "" for none. When both
	// ports are set, HTTPS starts FallbackDelay after HTTP, or at once
	// when HTTP fails.
	HTTPSPort string

	MachineKey      key.Private
	ServerKey       key.MachinePublic
	ProtocolVersion uint16

	// NetDial dials TCP; nil means a net.Dialer.
	NetDial func(ctx context.Context, network, addr string) (net.Conn, error)
	// RootCAs verifies the TLS certificate for logging only: the Noise
	// handshake authenticates the server, so a bad certificate does not
	// stop the dial. Nil means tlsroots.Pool (the system roots, completed
	// with built-in ones).
	RootCAs *x509.CertPool

	DialTimeout   time.Duration // 0 means DefaultDialTimeout
	FallbackDelay time.Duration // 0 means DefaultFallbackDelay
	Logger        *slog.Logger  // nil means discard
}

// Ports returns the HTTP and HTTPS upgrade ports for a control URL:
//
//	https://h    → HTTP 80, then HTTPS 443
//	https://h:P  → HTTPS P only
//	http://h:P   → HTTP P, then HTTPS 443 unless h is loopback, private or localhost
//	http://h     → HTTP 80, then HTTPS 443 unless h is loopback, private or localhost
func Ports(u *url.URL) (httpPort, httpsPort string, err error) {
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", "", fmt.Errorf("ts2021: control URL scheme %q is not http or https", u.Scheme)
	}
	host := u.Hostname()
	if host == "" {
		return "", "", errors.New("ts2021: control URL has no host")
	}
	addr, _ := netip.ParseAddr(host)
	private := addr.IsPrivate() || addr.IsLoopback() || host == "localhost"
	port := u.Port()
	switch {
	case u.Scheme == "https" && port != "":
		return "", port, nil
	case u.Scheme == "https":
		return "80", "443", nil
	case private:
		return cmpOr(port, "80"), "", nil
	default:
		return cmpOr(port, "80"), "443", nil
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// NewDialer returns a Dialer for the control server at serverURL.
func NewDialer(serverURL string, machine key.Private, server key.MachinePublic, version uint16) (*Dialer, error) {
	u, err := url.Parse(serverURL)
	if err != nil {
		return nil, fmt.Errorf("ts2021: bad control URL: %w", err)
	}
	hp, hsp, err := Ports(u)
	if err != nil {
		return nil, err
	}
	return &Dialer{Host: u.Hostname(), HTTPPort: hp, HTTPSPort: hsp, MachineKey: machine, ServerKey: server, ProtocolVersion: version}, nil
}

func (d *Dialer) logger() *slog.Logger {
	if d.Logger != nil {
		return d.Logger
	}
	return discard
}

var discard = slog.New(slog.DiscardHandler)

// Dial connects, upgrades and completes the Noise handshake, racing the
// HTTP and HTTPS ports as described on Dialer. The returned Conn strips
// the server's early payload before its first Read returns.
func (d *Dialer) Dial(ctx context.Context) (*Conn, error) {
	if d.HTTPPort == "" && d.HTTPSPort == "" {
		return nil, errors.New("ts2021: no port to dial")
	}
	timeout := d.DialTimeout
	if timeout <= 0 {
		timeout = DefaultDialTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	type result struct {
		tls  bool
		conn *Conn
		err  error
	}
	results := make(chan result) // unbuffered: losers see ctx.Done
	try := func(useTLS bool, port string) {
		c, err := d.dialOne(ctx, useTLS, port)
		select {
		case results <- result{useTLS, c, err}:
		case <-ctx.Done():
			if c != nil {
				c.Close()
			}
		}
	}
	pending := 0
	var tlsTimer *time.Timer
	var tlsStart chan struct{}
	if d.HTTPPort != "" {
		pending++
		go try(false, d.HTTPPort)
	}
	if d.HTTPSPort != "" {
		pending++
		if d.HTTPPort == "" {
			go try(true, d.HTTPSPort)
		} else {
			delay := d.FallbackDelay
			if delay <= 0 {
				delay = DefaultFallbackDelay
			}
			tlsStart = make(chan struct{})
			tlsTimer = time.AfterFunc(delay, func() { close(tlsStart) })
			go func() {
				select {
				case <-tlsStart:
					try(true, d.HTTPSPort)
				case <-ctx.Done():
				}
			}()
			defer tlsTimer.Stop()
		}
	}
	var errs []error
	for pending > 0 {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("ts2021: dial %s: %w", d.Host, errors.Join(append(errs, ctx.Err())...))
		case r := <-results:
			pending--
			if r.err == nil {
				return r.conn, nil
			}
			scheme := "http"
			if r.tls {
				scheme = "https"
			}
			d.logger().Debug("ts2021 dial attempt failed", "scheme", scheme, "err", r.err)
			errs = append(errs, fmt.Errorf("%s: %w", scheme, r.err))
			if !r.tls && tlsTimer != nil && tlsTimer.Stop() {
				close(tlsStart) // HTTP failed first: try HTTPS now
			}
		}
	}
	return nil, fmt.Errorf("ts2021: dial %s: %w", d.Host, errors.Join(errs...))
}

// dialOne makes one upgrade attempt on one port.
func (d *Dialer) dialOne(ctx context.Context, useTLS bool, port string) (c *Conn, err error) {
	init, err := noise.NewInitiator(d.MachineKey, d.ServerKey, d.ProtocolVersion)
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort(d.Host, port)
	dial := d.NetDial
	if dial == nil {
		// No TCP keep-alive probes: the map poll has its own keep-alives
		// and watchdog, and probes every 15 s would be most of an idle
		// node's traffic.
		dial = (&net.Dialer{KeepAlive: -1, Control: sockmark.Control}).DialContext
	}
	conn, err := dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			conn.Close()
		}
	}()
	// Bound the upgrade and handshake by ctx.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer func() {
		if !stop() && err == nil {
			c, err = nil, ctx.Err()
		}
		conn.SetDeadline(time.Time{})
	}()
	if useTLS {
		tc := tls.Client(conn, d.tlsConfig())
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
		conn = tc
	}

	hostHeader := d.Host
	if (useTLS && port != "443") || (!useTLS && port != "80") {
		hostHeader = addr
	}
	h := textproto.MIMEHeader{
		"Upgrade":       {UpgradeProtocol},
		"Connection":    {"upgrade"},
		HandshakeHeader: {base64.StdEncoding.EncodeToString(init.Message())},
	}
	if err := h1.WriteRequest(conn, "POST", UpgradePath, hostHeader, h, nil); err != nil {
		return nil, fmt.Errorf("writing upgrade request: %w", err)
	}
	br := bufio.NewReaderSize(conn, 1024)
	res, err := h1.ReadResponse(br, "POST")
	if err != nil {
		return nil, fmt.Errorf("reading upgrade response: %w", err)
	}
	if res.Status != 101 {
		return nil, fmt.Errorf("upgrade refused: %d %s", res.Status, res.Reason)
	}
	if got := res.Header.Get("Upgrade"); got != UpgradeProtocol {
		return nil, fmt.Errorf("server switched to unexpected protocol %q", got)
	}
	// The reader may hold the start of the Noise response already.
	var buffered []byte
	if n := br.Buffered(); n > 0 {
		buffered, _ = br.Peek(n)
		buffered = append([]byte(nil), buffered...)
	}
	nc, err := init.Finish(&prefixConn{Conn: conn, prefix: buffered})
	if err != nil {
		return nil, err
	}
	return newConn(nc), nil
}

func (d *Dialer) tlsConfig() *tls.Config {
	host := d.Host
	log := d.logger()
	roots := d.RootCAs
	return &tls.Config{
		ServerName: host,
		NextProtos: nil, // HTTP/1.1 only: the upgrade must not negotiate h2
		// The Noise handshake pins the server key; the certificate is
		// checked only to log a warning.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return nil
			}
			if roots == nil {
				roots = tlsroots.Pool(d.Logger)
			}
			opts := x509.VerifyOptions{DNSName: host, Roots: roots, Intermediates: x509.NewCertPool()}
			for _, c := range cs.PeerCertificates[1:] {
				opts.Intermediates.AddCert(c)
			}
			if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
				log.Warn("ts2021: TLS certificate not valid; relying on Noise", "host", host, "err", err)
			}
			return nil
		},
	}
}

// prefixConn reads prefix before reading from Conn.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		if len(c.prefix) == 0 {
			c.prefix = nil
		}
		return n, nil
	}
	return c.Conn.Read(p)
}
