package lab

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"sync/atomic"

	"golang.org/x/net/dns/dnsmessage"
)

// DNSServer is an upstream resolver for tests, on UDP and TCP: it answers
// every A query with one address and every other query with no records.
type DNSServer struct {
	Addr    netip.AddrPort
	Queries atomic.Int64 // queries answered
}

// StartDNSServer serves on addr (port 0 for any) in namespace ns ("" for
// the test's own) until t ends, answering A queries with answer.
func StartDNSServer(t T, ns string, addr netip.AddrPort, answer netip.Addr) *DNSServer {
	t.Helper()
	var pc *net.UDPConn
	var ln net.Listener
	err := within(ns, func() error {
		var err error
		if pc, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr)); err != nil {
			return err
		}
		port := uint16(pc.LocalAddr().(*net.UDPAddr).Port)
		if ln, err = net.Listen("tcp", netip.AddrPortFrom(addr.Addr(), port).String()); err != nil {
			pc.Close()
		}
		return err
	})
	if err != nil {
		t.Fatalf("DNS server on %v: %v", addr, err)
	}
	t.Cleanup(func() { pc.Close(); ln.Close() })
	s := &DNSServer{Addr: netip.MustParseAddrPort(ln.Addr().String())}
	respond := func(q []byte) []byte {
		var m dnsmessage.Message
		if m.Unpack(q) != nil || len(m.Questions) != 1 || m.Header.Response {
			return nil
		}
		s.Queries.Add(1)
		m.Header.Response, m.Header.RecursionAvailable = true, true
		m.Answers, m.Authorities, m.Additionals = nil, nil, nil
		if q := m.Questions[0]; q.Type == dnsmessage.TypeA {
			m.Answers = []dnsmessage.Resource{{
				Header: dnsmessage.ResourceHeader{Name: q.Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 60},
				Body:   &dnsmessage.AResource{A: answer.As4()},
			}}
		}
		b, _ := m.Pack()
		return b
	}
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if b := respond(buf[:n]); b != nil {
				pc.WriteTo(b, from)
			}
		}
	}()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					q, err := ReadDNSOverTCP(br)
					if err != nil {
						return
					}
					b := respond(q)
					if b == nil {
						return
					}
					if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...)); err != nil {
						return
					}
				}
			}()
		}
	}()
	return s
}

// within runs f in namespace ns, or in place for "".
func within(ns string, f func() error) error {
	if ns == "" {
		return f()
	}
	return Within(ns, f)
}

// ReadDNSOverTCP reads one length-prefixed DNS message.
func ReadDNSOverTCP(r io.Reader) ([]byte, error) {
	var lb [2]byte
	if _, err := io.ReadFull(r, lb[:]); err != nil {
		return nil, err
	}
	b := make([]byte, binary.BigEndian.Uint16(lb[:]))
	_, err := io.ReadFull(r, b)
	return b, err
}
