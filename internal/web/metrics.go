package web

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/microlink-go/microlink"
)

// metrics renders the node's counters in the Prometheus text format
// (version 0.0.4).
func metrics(n *microlink.Node, now time.Time) []byte {
	var b bytes.Buffer
	st := n.Status()
	s := n.Stats()
	m := func(name, typ, help string) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
	}
	v := func(name string, val float64, labels ...string) {
		b.WriteString(name)
		if len(labels) > 0 {
			b.WriteByte('{')
			for i := 0; i+1 < len(labels); i += 2 {
				if i > 0 {
					b.WriteByte(',')
				}
				b.WriteString(labels[i] + `="` + escLabel(labels[i+1]) + `"`)
			}
			b.WriteByte('}')
		}
		b.WriteByte(' ')
		b.WriteString(strconv.FormatFloat(val, 'g', -1, 64))
		b.WriteByte('\n')
	}
	u := func(x uint64) float64 { return float64(x) }

	m("microlink_info", "gauge", "Always 1; the labels tell the version.")
	v("microlink_info", 1, "version", microlink.VersionString())
	m("microlink_state", "gauge", "1 for the node's current state (Stopped, Connecting, NeedsLogin, NeedsApproval, Connected).")
	for _, x := range []microlink.State{microlink.Stopped, microlink.Connecting, microlink.NeedsLogin, microlink.NeedsApproval, microlink.Connected} {
		val := 0.0
		if st.State == x {
			val = 1
		}
		v("microlink_state", val, "state", x.String())
	}
	m("microlink_control_errors", "gauge", "1 while the last attempt to use the control server failed.")
	v("microlink_control_errors", b2f(st.Err != nil))
	m("microlink_home_derp_region", "gauge", "The home DERP region; 0 if none.")
	v("microlink_home_derp_region", float64(st.HomeDERP))
	m("microlink_peers", "gauge", "Peers in the netmap.")
	v("microlink_peers", float64(s.Peers))
	m("microlink_packets_total", "counter", "WireGuard data packets.")
	v("microlink_packets_total", u(s.PacketsIn), "direction", "in")
	v("microlink_packets_total", u(s.PacketsOut), "direction", "out")
	m("microlink_bytes_total", "counter", "WireGuard payload bytes.")
	v("microlink_bytes_total", u(s.BytesIn), "direction", "in")
	v("microlink_bytes_total", u(s.BytesOut), "direction", "out")
	m("microlink_path_bytes_total", "counter", "WireGuard message bytes by path: direct UDP or relayed by DERP.")
	v("microlink_path_bytes_total", u(s.DirectBytesIn), "path", "direct", "direction", "in")
	v("microlink_path_bytes_total", u(s.DirectBytesOut), "path", "direct", "direction", "out")
	v("microlink_path_bytes_total", u(s.DERPBytesIn), "path", "derp", "direction", "in")
	v("microlink_path_bytes_total", u(s.DERPBytesOut), "path", "derp", "direction", "out")
	m("microlink_path_packets_total", "counter", "WireGuard messages by path: direct UDP or relayed by DERP.")
	v("microlink_path_packets_total", u(s.DirectPacketsIn), "path", "direct", "direction", "in")
	v("microlink_path_packets_total", u(s.DirectPacketsOut), "path", "direct", "direction", "out")
	v("microlink_path_packets_total", u(s.DERPPacketsIn), "path", "derp", "direction", "in")
	v("microlink_path_packets_total", u(s.DERPPacketsOut), "path", "derp", "direction", "out")
	m("microlink_handshakes_total", "counter", "Completed WireGuard handshakes.")
	v("microlink_handshakes_total", u(s.Handshakes))
	m("microlink_dropped_packets_total", "counter", "Packets dropped by the filter or for errors.")
	v("microlink_dropped_packets_total", u(s.Dropped))
	m("microlink_tcp_connections", "gauge", "TCP connections in any state.")
	v("microlink_tcp_connections", float64(s.TCPConns))
	m("microlink_tcp_retransmits_total", "counter", "TCP segments sent again after a loss.")
	v("microlink_tcp_retransmits_total", u(s.TCPRetransmits))
	m("microlink_map_updates_total", "counter", "Netmap messages from control.")
	v("microlink_map_updates_total", u(s.MapUpdates))
	m("microlink_register_requests_total", "counter", "Register requests sent to control.")
	v("microlink_register_requests_total", u(s.RegisterRequests))

	peers := n.Peers()
	m("microlink_peer_online", "gauge", "1 if control reports the peer online.")
	for _, p := range peers {
		v("microlink_peer_online", b2f(p.Online), peerLabels(p)...)
	}
	m("microlink_peer_path", "gauge", "1 for the path packets take to the peer: direct, derp or none.")
	for _, p := range peers {
		path := p.Path
		if path == "" {
			path = "none"
		}
		v("microlink_peer_path", 1, append(peerLabels(p), "path", path)...)
	}
	m("microlink_peer_rx_bytes_total", "counter", "WireGuard payload bytes received from the peer.")
	for _, p := range peers {
		v("microlink_peer_rx_bytes_total", u(p.RxBytes), peerLabels(p)...)
	}
	m("microlink_peer_tx_bytes_total", "counter", "WireGuard payload bytes sent to the peer.")
	for _, p := range peers {
		v("microlink_peer_tx_bytes_total", u(p.TxBytes), peerLabels(p)...)
	}
	m("microlink_peer_latency_seconds", "gauge", "The last measured round trip to the peer (peers measured so far).")
	for _, p := range peers {
		if p.Latency > 0 {
			v("microlink_peer_latency_seconds", p.Latency.Seconds(), peerLabels(p)...)
		}
	}
	m("microlink_peer_handshake_age_seconds", "gauge", "Time since the last WireGuard handshake with the peer (peers with a session).")
	for _, p := range peers {
		if !p.LastHandshake.IsZero() {
			v("microlink_peer_handshake_age_seconds", now.Sub(p.LastHandshake).Seconds(), peerLabels(p)...)
		}
	}
	return b.Bytes()
}

func peerLabels(p microlink.Peer) []string {
	ip := ""
	if len(p.Addresses) > 0 {
		ip = p.Addresses[0].String()
	}
	return []string{"peer", p.Name, "ip", ip}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// escLabel escapes a label value: backslash, double quote and newline.
func escLabel(s string) string {
	if !strings.ContainsAny(s, "\\\"\n") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\', '"':
			b.WriteByte('\\')
			b.WriteByte(c)
		case '\n':
			b.WriteString(`\n`)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
