package lab

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"

	"golang.org/x/net/dns/dnsmessage"
)

// DNSServer is an upstream resolver for tests, on UDP and TCP: it answers
// every A query with one address and every other query with no records.
type DNSServer struct {
	Addr    netip.AddrPort
	Queries atomic.Int64 // queries answered
	// Names receives the name of each query while it has room (100).
	Names chan string
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
	s := &DNSServer{Addr: netip.MustParseAddrPort(ln.Addr().String()), Names: make(chan string, 100)}
	respond := func(q []byte) []byte {
		var m dnsmessage.Message
		if m.Unpack(q) != nil || len(m.Questions) != 1 || m.Header.Response {
			return nil
		}
		s.Queries.Add(1)
		select {
		case s.Names <- m.Questions[0].Name.String():
		default:
		}
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

// DNSQuery builds a query for name (absolute, with its trailing dot) and
// typ, with recursion desired.
func DNSQuery(id uint16, name string, typ dnsmessage.Type) ([]byte, error) {
	n, err := dnsmessage.NewName(name)
	if err != nil {
		return nil, err
	}
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, RecursionDesired: true})
	b.StartQuestions()
	if err := b.Question(dnsmessage.Question{Name: n, Type: typ, Class: dnsmessage.ClassINET}); err != nil {
		return nil, err
	}
	return b.Finish()
}

// DNSSummary summarizes an answer as "RCODE value value...", with the A,
// AAAA and PTR records' values in order.
func DNSSummary(b []byte) (string, error) {
	var m dnsmessage.Message
	if err := m.Unpack(b); err != nil {
		return "", err
	}
	out := []string{m.Header.RCode.String()}
	for _, r := range m.Answers {
		switch body := r.Body.(type) {
		case *dnsmessage.AResource:
			out = append(out, netip.AddrFrom4(body.A).String())
		case *dnsmessage.AAAAResource:
			out = append(out, netip.AddrFrom16(body.AAAA).String())
		case *dnsmessage.PTRResource:
			out = append(out, body.PTR.String())
		}
	}
	return strings.Join(out, " "), nil
}
