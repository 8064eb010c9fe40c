// Package ts2021 connects to a Tailscale control server over the ts2021
// transport: the server's Noise key is fetched from /key, a TCP (or TLS)
// connection is upgraded at /ts2021 to a Noise session authenticated by the
// machine key, an optional early payload is stripped, and HTTP/2 with prior
// knowledge runs inside the session.
//
// [Client] multiplexes every request over one such connection and dials a
// new one when it dies.
package ts2021
