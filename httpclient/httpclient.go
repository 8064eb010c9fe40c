// Package httpclient gives Go programs an *http.Client whose connections
// go through a microlink node, so that URLs may name tailnet addresses
// and MagicDNS names:
//
//	hc := httpclient.New(node)
//	res, err := hc.Get("http://laptop:8080/")
//
// It lives apart from package microlink because it needs net/http, over
// a megabyte of binary that programs (and the microlink command) that do
// not use it should not carry.
package httpclient

import (
	"context"
	"net"
	"net/http"
	"time"
)

// Dialer is what the client dials with; *microlink.Node is one.
type Dialer interface {
	Dial(ctx context.Context, network, addr string) (net.Conn, error)
}

// Transport returns an http.Transport that dials every connection
// through d. It uses no proxy from the environment: the tailnet is the
// way out.
func Transport(d Dialer) *http.Transport {
	return &http.Transport{
		DialContext:           d.Dial,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

// New returns an http.Client whose transport dials through d.
func New(d Dialer) *http.Client {
	return &http.Client{Transport: Transport(d)}
}
