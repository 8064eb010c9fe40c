package derp

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/microlink-go/microlink/internal/h1"
	"github.com/microlink-go/microlink/internal/key"
	"github.com/microlink-go/microlink/internal/sockmark"
	"github.com/microlink-go/microlink/internal/tlsroots"
)

// Node is one DERP server, as the DERP map describes it.
type Node struct {
	Name     string // unique label such as "1a"
	RegionID int
	HostName string // for DNS, TLS SNI and certificate checks, and the Host header
	// CertName is an alternate expected certificate name, or
	// "sha256-raw:<hex>" to pin the SHA-256 of the raw certificate.
	CertName string
	// IPv4 and IPv6 are explicit addresses. Empty means use DNS on
	// HostName; a value that is not an IP of that family (such as "none")
	// disables the family.
	IPv4, IPv6       string
	DERPPort         int  // HTTPS port; 0 means 443
	InsecureForTests bool // skip certificate verification
	STUNOnly         bool // not a DERP server
}

// Options configure a Client.
type Options struct {
	// PrivateKey is the node's private key; its public half is the
	// node's address on the relay.
	PrivateKey key.Private
	// Logger receives debug logs; nil discards them.
	Logger *slog.Logger
	// DisablePingAcks stops the client from answering the server's pings
	// and from announcing that it does (CanAckPings).
	DisablePingAcks bool
	// ReturnPings makes Recv return the server's pings as Ping messages
	// instead of answering them itself, for a caller that answers them
	// with SendPong from another goroutine. An answer written from the
	// reading goroutine would stop it reading for as long as the write
	// takes: up to 5 s against a server that does not read.
	ReturnPings bool
	// AppName is optionally sent to the server (at most 32 printable bytes).
	AppName string
	// RootCAs verifies server certificates; nil means tlsroots.Pool (the
	// system roots, completed with built-in ones).
	RootCAs *x509.CertPool
}

const (
	connectTimeout  = 10 * time.Second
	dialNodeTimeout = 1500 * time.Millisecond
	metaCertPrefix  = "derpkey"
)

// Dial connects to the first reachable DERP server among nodes, a region's
// nodes in preference order, skipping STUN-only ones. It gives up after
// 10 s or when ctx is done.
func Dial(ctx context.Context, nodes []Node, opts Options) (*Client, error) {
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	log := logger(opts.Logger)
	var firstErr error
	for i, n := range nodes {
		if n.STUNOnly {
			continue
		}
		ideal := ""
		if i > 0 {
			ideal = nodes[0].Name
		}
		c, err := dialNode(ctx, n, ideal, opts)
		if err == nil {
			return c, nil
		}
		log.Debug("derp: node failed", "node", n.Name, "host", n.HostName, "err", err)
		if firstErr == nil {
			firstErr = fmt.Errorf("derp: node %q: %w", n.Name, err)
		}
		if ctx.Err() != nil {
			break
		}
	}
	if firstErr == nil {
		firstErr = errors.New("derp: no DERP nodes to dial")
	}
	return nil, firstErr
}

// dialNode connects to one node. ideal is the name of the region's
// preferred node when n is not it.
func dialNode(ctx context.Context, n Node, ideal string, opts Options) (*Client, error) {
	tcp, err := dialTCP(ctx, n)
	if err != nil {
		return nil, err
	}
	c, err := upgrade(ctx, tcp, n, ideal, opts)
	if err != nil {
		tcp.Close()
		return nil, err
	}
	return c, nil
}

// upgrade runs TLS, the HTTP upgrade and the DERP handshake over tcp.
func upgrade(ctx context.Context, tcp net.Conn, n Node, ideal string, opts Options) (*Client, error) {
	roots := opts.RootCAs
	if roots == nil && !n.InsecureForTests {
		roots = tlsroots.Pool(opts.Logger)
	}
	tc := tls.Client(tcp, tlsConfig(n, roots))
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, err
	}
	var knownKey key.NodePublic
	cs := tc.ConnectionState()
	if cs.Version >= tls.VersionTLS13 {
		knownKey = metaCertKey(cs.PeerCertificates)
	}

	host := tlsServerName(n)
	if n.DERPPort != 0 && n.DERPPort != 443 {
		host = net.JoinHostPort(host, strconv.Itoa(n.DERPPort))
	}
	if !validHeaderValue(host) {
		return nil, fmt.Errorf("derp: bad host name %q", host)
	}
	var req strings.Builder
	req.WriteString("GET /derp HTTP/1.1\r\nHost: " + host + "\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n")
	if !knownKey.IsZero() {
		req.WriteString("Derp-Fast-Start: 1\r\n")
	}
	if ideal != "" && validHeaderValue(ideal) {
		req.WriteString("Ideal-Node: " + ideal + "\r\n")
	}
	req.WriteString("\r\n")

	br := bufio.NewReader(tc)
	err := withContext(ctx, tc, func() error {
		if _, err := io.WriteString(tc, req.String()); err != nil {
			return err
		}
		if !knownKey.IsZero() {
			return nil
		}
		// Without fast start the server answers with an HTTP response.
		k, err := readUpgradeResponse(br)
		knownKey = k
		return err
	})
	if err != nil {
		return nil, err
	}
	return newClient(ctx, tc, br, knownKey, opts)
}

// readUpgradeResponse reads the server's answer to the upgrade request
// and returns the key of its Derp-Public-Key header, or zero if absent.
func readUpgradeResponse(br *bufio.Reader) (key.NodePublic, error) {
	resp, err := h1.ReadResponse(br, "GET")
	if err != nil {
		return key.NodePublic{}, err
	}
	if resp.Status != 101 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return key.NodePublic{}, fmt.Errorf("derp: upgrade refused: %d %s: %q", resp.Status, resp.Reason, b)
	}
	h := resp.Header.Get("Derp-Public-Key")
	if h == "" {
		return key.NodePublic{}, nil
	}
	k, err := key.ParsePublicHex(h)
	if err != nil {
		return key.NodePublic{}, fmt.Errorf("derp: Derp-Public-Key: %w", err)
	}
	return key.NodePublic(k), nil
}

// validHeaderValue reports whether s can go into a request header as is.
func validHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return s != ""
}

// tlsServerName is the name the server's certificate must carry.
func tlsServerName(n Node) string {
	if n.HostName != "" {
		return n.HostName
	}
	if ip, err := netip.ParseAddr(n.IPv4); err == nil && ip.Is4() {
		return n.IPv4
	}
	return n.IPv6
}

func tlsConfig(n Node, roots *x509.CertPool) *tls.Config {
	name := tlsServerName(n)
	conf := &tls.Config{
		ServerName: name,
		RootCAs:    roots,
		MinVersion: tls.VersionTLS12,
		// No ALPN: DERP is HTTP/1.1 only, and offering h2 would let the
		// server pick it.
	}
	if n.InsecureForTests {
		conf.InsecureSkipVerify = true
	}
	if hash, ok := strings.CutPrefix(n.CertName, "sha256-raw:"); ok {
		conf.InsecureSkipVerify = true
		conf.VerifyConnection = func(cs tls.ConnectionState) error {
			return verifyPinned(cs.PeerCertificates, hash, n.HostName, time.Now())
		}
	} else if n.CertName != "" && n.CertName != name && !n.InsecureForTests {
		conf.InsecureSkipVerify = true
		conf.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
			return verifyChain(raw, n.CertName, roots)
		}
	}
	return conf
}

// verifyPinned accepts exactly one certificate (not counting the meta
// certificate) whose SHA-256 is wantHex, valid now and, when host is not
// empty, for host.
func verifyPinned(certs []*x509.Certificate, wantHex, host string, now time.Time) error {
	want, err := hex.DecodeString(wantHex)
	if err != nil || len(want) != sha256.Size {
		return errors.New("derp: malformed sha256-raw certificate pin")
	}
	var good bool
	for _, cert := range certs {
		if strings.HasPrefix(cert.Subject.CommonName, metaCertPrefix) {
			continue
		}
		if good {
			return errors.New("derp: more than one certificate presented for a pinned server")
		}
		if sum := sha256.Sum256(cert.Raw); string(sum[:]) != string(want) {
			return errors.New("derp: certificate does not match its pinned hash")
		}
		if host != "" {
			if err := cert.VerifyHostname(host); err != nil {
				return err
			}
		}
		if now.Before(cert.NotBefore) || now.After(cert.NotAfter) {
			return errors.New("derp: pinned certificate is not valid now")
		}
		good = true
	}
	if !good {
		return errors.New("derp: pinned certificate not presented")
	}
	return nil
}

// verifyChain verifies the server's chain for the DNS name name.
func verifyChain(raw [][]byte, name string, roots *x509.CertPool) error {
	if len(raw) == 0 {
		return errors.New("derp: no certificate presented")
	}
	opts := x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: x509.NewCertPool()}
	var leaf *x509.Certificate
	for i, b := range raw {
		cert, err := x509.ParseCertificate(b)
		if err != nil {
			return err
		}
		if i == 0 {
			leaf = cert
		} else {
			opts.Intermediates.AddCert(cert)
		}
	}
	_, err := leaf.Verify(opts)
	return err
}

// metaCertKey finds the server key in a DERP meta certificate: subject
// CN "derpkey<64 hex>" and a serial number that is the protocol version.
func metaCertKey(certs []*x509.Certificate) key.NodePublic {
	for _, cert := range certs {
		h, ok := strings.CutPrefix(cert.Subject.CommonName, metaCertPrefix)
		if !ok {
			continue
		}
		k, err := key.ParsePublicHex(h)
		if err != nil || cert.SerialNumber == nil {
			continue
		}
		if cert.SerialNumber.Sign() > 0 && cert.SerialNumber.BitLen() <= 8 {
			return key.NodePublic(k)
		}
	}
	return key.NodePublic{}
}

// dialTCP connects to n's DERP port, racing its IPv4 and IPv6 addresses,
// within dialNodeTimeout.
func dialTCP(ctx context.Context, n Node) (net.Conn, error) {
	port := "443"
	if n.DERPPort != 0 {
		port = strconv.Itoa(n.DERPPort)
	}
	type target struct{ network, host string }
	var targets []target
	if n.IPv4 == "" && n.IPv6 == "" {
		if n.HostName == "" {
			return nil, errors.New("derp: node has no address")
		}
		targets = append(targets, target{"tcp", n.HostName})
	} else {
		for _, f := range []struct {
			field, network string
			is             func(netip.Addr) bool
		}{{n.IPv6, "tcp6", netip.Addr.Is6}, {n.IPv4, "tcp4", netip.Addr.Is4}} {
			switch ip, err := netip.ParseAddr(f.field); {
			case f.field == "" && n.HostName != "":
				targets = append(targets, target{f.network, n.HostName})
			case err == nil && f.is(ip):
				targets = append(targets, target{f.network, ip.String()})
			}
		}
	}
	if len(targets) == 0 {
		return nil, errors.New("derp: both address families are disabled for the node")
	}

	ctx, cancel := context.WithTimeout(ctx, dialNodeTimeout)
	defer cancel()
	type result struct {
		c   net.Conn
		err error
	}
	results := make(chan result, len(targets))
	for _, t := range targets {
		go func() {
			// No TCP keep-alive probes: the server sends a KeepAlive
			// frame every minute and the client's read deadline notices
			// a dead connection; probes would only add idle traffic.
			d := net.Dialer{KeepAlive: -1, Control: sockmark.Control}
			c, err := d.DialContext(ctx, t.network, net.JoinHostPort(t.host, port))
			results <- result{c, err}
		}()
	}
	var won net.Conn
	var firstErr error
	for range targets {
		r := <-results
		switch {
		case r.err != nil:
			if firstErr == nil {
				firstErr = r.err
			}
		case won == nil:
			won = r.c
			cancel() // stop the other attempts
		default:
			r.c.Close()
		}
	}
	if won != nil {
		return won, nil
	}
	return nil, firstErr
}
