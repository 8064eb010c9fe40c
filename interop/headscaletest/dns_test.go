package headscaletest

import (
	"context"
	"encoding/binary"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/microlink-go/microlink"
	"github.com/microlink-go/microlink/interop/lab"
)

// testMagicDNS: microlink's resolver at 100.100.100.100 answers, over UDP
// and TCP, the names Headscale gives (short and under its base domain,
// forward and reverse) and the extra record of its configuration, and
// Dial reaches the real peer by its MagicDNS name.
func testMagicDNS(t *testing.T, n *microlink.Node, ts *lab.Tailscaled) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a4 := ts.IPv4().As4()
	ptr := strings.Join([]string{itoa(a4[3]), itoa(a4[2]), itoa(a4[1]), itoa(a4[0]), "in-addr.arpa."}, ".")
	for _, tc := range []struct {
		name string
		typ  dnsmessage.Type
		want string
	}{
		{peerName + "." + baseDomain + ".", dnsmessage.TypeA, "RCodeSuccess " + ts.IPv4().String()},
		{peerName + "." + baseDomain + ".", dnsmessage.TypeAAAA, "RCodeSuccess " + ts.IPv6().String()},
		{peerName + ".", dnsmessage.TypeA, "RCodeSuccess " + ts.IPv4().String()},
		{mlName + "." + baseDomain + ".", dnsmessage.TypeA, "RCodeSuccess " + n.IPv4().String()},
		{"grafana." + baseDomain + ".", dnsmessage.TypeA, "RCodeSuccess 100.64.99.20"},
		{"nobody." + baseDomain + ".", dnsmessage.TypeA, "RCodeNameError"},
		{ptr, dnsmessage.TypePTR, "RCodeSuccess " + peerName + "." + baseDomain + "."},
	} {
		for _, network := range []string{"udp", "tcp"} {
			got, err := queryQuad100(ctx, n, network, tc.name, tc.typ)
			if err != nil || got != tc.want {
				t.Errorf("%s %v over %s: %q %v, want %q", tc.name, tc.typ, network, got, err, tc.want)
			}
		}
	}
	for _, name := range []string{peerName, peerName + "." + baseDomain} {
		addrs, err := n.LookupHost(ctx, name)
		if err != nil || !slices.Contains(addrs, ts.IPv4()) {
			t.Errorf("LookupHost(%s) = %v, %v", name, addrs, err)
		}
	}
	if addrs, err := n.LookupHost(ctx, "grafana."+baseDomain); err != nil || !slices.Equal(addrs, []netip.Addr{netip.MustParseAddr("100.64.99.20")}) {
		t.Errorf("LookupHost(grafana) = %v, %v", addrs, err)
	}
	c, err := n.Dial(ctx, "udp", peerName+"."+baseDomain+":9")
	if err != nil {
		t.Fatalf("Dial by MagicDNS name: %v", err)
	}
	if got := c.RemoteAddr().String(); got != ts.IPv4().String()+":9" {
		t.Errorf("Dial by name connected to %s", got)
	}
	c.Close()
}

func itoa(b byte) string { return strconv.Itoa(int(b)) }

// queryQuad100 sends one query to the node's resolver through Dial and
// summarizes the answer as "RCODE value...".
func queryQuad100(ctx context.Context, n *microlink.Node, network, name string, typ dnsmessage.Type) (string, error) {
	q, err := lab.DNSQuery(7, name, typ)
	if err != nil {
		return "", err
	}
	c, err := n.Dial(ctx, network, "100.100.100.100:53")
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	var resp []byte
	if network == "tcp" {
		c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(q))), q...))
		if resp, err = lab.ReadDNSOverTCP(c); err != nil {
			return "", err
		}
	} else {
		c.Write(q)
		buf := make([]byte, 1500)
		nr, err := c.Read(buf)
		if err != nil {
			return "", err
		}
		resp = buf[:nr]
	}
	return lab.DNSSummary(resp)
}
