// Sizefloor is the smallest program that does what any Tailscale client
// needs from the Go standard library: it dials a TLS server (as a DERP
// client does), encodes and decodes JSON (as the map does), logs with
// log/slog and sends a UDP datagram (as disco and WireGuard do). Built
// with the same flags as microlink, its size is the floor below which no
// Go client can go; scripts/bench.sh reports it next to the size goal.
//
// Built with -tags withhttp it also makes an HTTP request with net/http's
// client, to show what that package adds.
//
// Usage:
//
//	sizefloor [-tls HOST:PORT] [-udp HOST:PORT]
package main

import (
	"crypto/tls"
	"encoding/json"
	"flag"
	"log/slog"
	"net"
	"os"
	"time"
)

// message stands for the wire types a client decodes.
type message struct {
	Name  string            `json:"name"`
	Addrs []string          `json:"addrs,omitempty"`
	Caps  map[string]bool   `json:"caps,omitempty"`
	Peers []json.RawMessage `json:"peers,omitempty"`
}

func main() {
	tlsAddr := flag.String("tls", "", "TLS server to dial")
	udpAddr := flag.String("udp", "", "UDP address to send a datagram to")
	httpURL := flag.String("http", "", "URL to fetch (only with -tags withhttp)")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))

	var m message
	if err := json.NewDecoder(os.Stdin).Decode(&m); err != nil {
		log.Warn("decode", "err", err)
	}
	out, err := json.Marshal(m)
	if err != nil {
		log.Error("encode", "err", err)
		os.Exit(1)
	}
	log.Info("message", "json", string(out))

	if *tlsAddr != "" {
		d := &net.Dialer{Timeout: 5 * time.Second}
		c, err := tls.DialWithDialer(d, "tcp", *tlsAddr, &tls.Config{MinVersion: tls.VersionTLS12})
		if err != nil {
			log.Error("tls", "err", err)
			os.Exit(1)
		}
		log.Info("tls", "version", c.ConnectionState().Version)
		c.Close()
	}
	if *udpAddr != "" {
		c, err := net.Dial("udp", *udpAddr)
		if err != nil {
			log.Error("udp", "err", err)
			os.Exit(1)
		}
		c.Write(out)
		c.Close()
	}
	if *httpURL != "" {
		if err := fetch(*httpURL); err != nil {
			log.Error("http", "err", err)
			os.Exit(1)
		}
	}
}
