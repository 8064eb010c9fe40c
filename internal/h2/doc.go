// Package h2 is a small HTTP/2 client (RFC 9113) for one connection that
// already speaks HTTP/2 with prior knowledge, such as a ts2021 Noise
// session: no TLS, no upgrade, no server push.
//
// A [ClientConn] multiplexes concurrent requests as streams, honours the
// server's settings and flow control in both directions, and hands out
// response bodies as streams: a body is buffered only up to the receive
// window, which is replenished as the caller reads.
package h2
