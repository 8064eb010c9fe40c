package daemontest

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// dnsServer is an upstream resolver on loopback (UDP and TCP) that
// answers every A query with addr.
type dnsServer struct {
	addr    netip.AddrPort
	queries chan string
}

func startDNSServer(t *testing.T, answer netip.Addr) *dnsServer {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &dnsServer{addr: netip.MustParseAddrPort(pc.LocalAddr().String()), queries: make(chan string, 100)}
	ln, err := net.Listen("tcp", s.addr.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close(); ln.Close() })
	respond := func(q []byte) []byte {
		var m dnsmessage.Message
		if m.Unpack(q) != nil || len(m.Questions) != 1 {
			return nil
		}
		select {
		case s.queries <- m.Questions[0].Name.String():
		default:
		}
		m.Header.Response, m.Header.RecursionAvailable = true, true
		m.Additionals = nil
		if m.Questions[0].Type == dnsmessage.TypeA {
			m.Answers = []dnsmessage.Resource{{
				Header: dnsmessage.ResourceHeader{Name: m.Questions[0].Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 60},
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
					q, err := readTCPMsg(br)
					if err != nil {
						return
					}
					b := respond(q)
					c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...))
				}
			}()
		}
	}()
	return s
}

func readTCPMsg(r io.Reader) ([]byte, error) {
	var lb [2]byte
	if _, err := io.ReadFull(r, lb[:]); err != nil {
		return nil, err
	}
	b := make([]byte, binary.BigEndian.Uint16(lb[:]))
	_, err := io.ReadFull(r, b)
	return b, err
}

func dnsQuery(t *testing.T, id uint16, name string, typ dnsmessage.Type) []byte {
	t.Helper()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, RecursionDesired: true})
	b.StartQuestions()
	if err := b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: typ, Class: dnsmessage.ClassINET}); err != nil {
		t.Fatal(err)
	}
	q, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// dnsAnswer summarizes an answer as "RCODE value value...".
func dnsAnswer(t *testing.T, b []byte) string {
	t.Helper()
	var m dnsmessage.Message
	if err := m.Unpack(b); err != nil {
		t.Fatalf("answer: %v", err)
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
	return strings.Join(out, " ")
}

// socks5 opens a SOCKS5 session on proxy and sends a request (CONNECT or
// UDP ASSOCIATE) for dst; it returns the control connection and the bound
// address of the reply.
func socks5(t *testing.T, proxy string, cmd byte, dst netip.AddrPort) (net.Conn, netip.AddrPort) {
	t.Helper()
	c, err := net.Dial("tcp", proxy)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte{5, 1, 0})
	var m [2]byte
	if _, err := io.ReadFull(c, m[:]); err != nil || m != [2]byte{5, 0} {
		t.Fatalf("SOCKS5 method: %v %v", m, err)
	}
	a := dst.Addr().As4()
	req := append([]byte{5, cmd, 0, 1}, a[:]...)
	c.Write(binary.BigEndian.AppendUint16(req, dst.Port()))
	var rep [10]byte
	if _, err := io.ReadFull(c, rep[:]); err != nil {
		t.Fatalf("SOCKS5 reply: %v", err)
	}
	if rep[1] != 0 {
		t.Fatalf("SOCKS5 reply code %d for command %d to %v", rep[1], cmd, dst)
	}
	c.SetDeadline(time.Time{})
	return c, netip.AddrPortFrom(netip.AddrFrom4([4]byte(rep[4:8])), binary.BigEndian.Uint16(rep[8:]))
}

// dnsOverSOCKS sends queries to 100.100.100.100:53 through the daemon's
// SOCKS5 proxy, over UDP (ASSOCIATE) and TCP (CONNECT), and returns each
// answer summarized, UDP first.
func dnsOverSOCKS(t *testing.T, proxy string, name string, typ dnsmessage.Type) (udp, tcp string) {
	t.Helper()
	quad100 := netip.MustParseAddrPort("100.100.100.100:53")
	ctl, relay := socks5(t, proxy, 3, netip.MustParseAddrPort("0.0.0.0:0"))
	defer ctl.Close()
	uc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	hdr := []byte{0, 0, 0, 1, 100, 100, 100, 100, 0, 53}
	buf := make([]byte, 2048)
	for try := 0; ; try++ {
		uc.WriteToUDPAddrPort(append(hdr, dnsQuery(t, 42, name, typ)...), relay)
		uc.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := uc.Read(buf)
		if err == nil {
			if n < 10 || string(buf[:10]) != string(hdr) {
				t.Fatalf("UDP relay header %x", buf[:min(n, 10)])
			}
			udp = dnsAnswer(t, buf[10:n])
			break
		}
		if try == 3 {
			t.Fatalf("no UDP answer for %s: %v", name, err)
		}
	}
	c, _ := socks5(t, proxy, 1, quad100)
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	q := dnsQuery(t, 43, name, typ)
	c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(q))), q...))
	resp, err := readTCPMsg(c)
	if err != nil {
		t.Fatalf("TCP answer for %s: %v", name, err)
	}
	return udp, dnsAnswer(t, resp)
}

func reverseName(ip netip.Addr) string {
	a := ip.As4()
	return fmt.Sprintf("%d.%d.%d.%d.in-addr.arpa.", a[3], a[2], a[1], a[0])
}
