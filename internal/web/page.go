package web

import (
	"bytes"
	"fmt"
	"strings"
	"time"

	"github.com/microlink-go/microlink"
)

// page renders the status page: plain HTML and inline CSS, refreshed by
// a meta tag.
func page(n *microlink.Node, refresh time.Duration, now time.Time) []byte {
	var b bytes.Buffer
	st := n.Status()
	stats := n.Stats()
	peers := n.Peers()
	codes := n.DERPRegionCodes()
	esc := escapeHTML
	name := st.Hostname
	if st.FQDN != "" {
		name = st.FQDN
	}
	fmt.Fprintf(&b, `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="%d">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>microlink: %s</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1b1b1f;background:#fafafa}
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.4em 0 .4em}
table{border-collapse:collapse;background:#fff}th,td{padding:.3em .7em;border-bottom:1px solid #ddd;text-align:left;white-space:nowrap}
th{background:#eee}td.n{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#0a7d2c;font-weight:600}.off{color:#999}.warn{color:#b35c00;font-weight:600}
dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em;margin:0}dt{color:#555}dd{margin:0}
footer{margin-top:1.5em;color:#777;font-size:.9em}
</style></head><body>
`, int(refresh.Seconds()), esc(name))
	stateClass := "warn"
	if st.State == microlink.Connected {
		stateClass = "ok"
	}
	fmt.Fprintf(&b, "<h1 id=\"node\">%s</h1>\n<dl id=\"self\">\n", esc(name))
	fmt.Fprintf(&b, "<dt>State</dt><dd id=\"state\" class=\"%s\">%s</dd>\n", stateClass, esc(st.State.String()))
	if st.AuthURL != "" {
		fmt.Fprintf(&b, "<dt>Log in at</dt><dd>%s</dd>\n", esc(st.AuthURL))
	}
	if st.Err != nil {
		fmt.Fprintf(&b, "<dt>Last error</dt><dd class=\"warn\">%s</dd>\n", esc(st.Err.Error()))
	}
	for _, h := range st.Health {
		fmt.Fprintf(&b, "<dt>Health</dt><dd class=\"warn\">%s</dd>\n", esc(h))
	}
	addrs := make([]string, len(st.Addresses))
	for i, a := range st.Addresses {
		addrs[i] = a.String()
	}
	fmt.Fprintf(&b, "<dt>Addresses</dt><dd id=\"addresses\">%s</dd>\n", esc(strings.Join(addrs, ", ")))
	fmt.Fprintf(&b, "<dt>Home DERP</dt><dd>%s</dd>\n", esc(region(st.HomeDERP, codes)))
	fmt.Fprintf(&b, "<dt>Control</dt><dd>%s</dd>\n", esc(n.ControlURL()))
	fmt.Fprintf(&b, "<dt>Traffic</dt><dd>rx %s, tx %s (direct rx %s tx %s, relayed rx %s tx %s)</dd>\n",
		bytesStr(stats.BytesIn), bytesStr(stats.BytesOut), bytesStr(stats.DirectBytesIn), bytesStr(stats.DirectBytesOut),
		bytesStr(stats.DERPBytesIn), bytesStr(stats.DERPBytesOut))
	fmt.Fprintf(&b, "<dt>Version</dt><dd>%s</dd>\n</dl>\n", esc(microlink.VersionString()))

	fmt.Fprintf(&b, "<h2>Peers (%d)</h2>\n", len(peers))
	b.WriteString(`<table id="peers"><thead><tr><th>Name</th><th>Address</th><th>OS</th><th>Status</th><th>Path</th><th>Latency</th><th>Rx</th><th>Tx</th><th>Handshake</th></tr></thead><tbody>` + "\n")
	for _, p := range peers {
		status, class := "offline", "off"
		switch {
		case p.Expired:
			status, class = "expired", "warn"
		case p.Online:
			status, class = "online", "ok"
		}
		path := "-"
		switch p.Path {
		case "direct":
			path = "direct " + p.Endpoint.String()
		case "derp":
			path = "relay " + region(p.DERPRegion, codes)
		}
		lat := "-"
		if p.Latency > 0 {
			lat = fmt.Sprintf("%.2f ms", float64(p.Latency.Microseconds())/1000)
		}
		hs := "-"
		if !p.LastHandshake.IsZero() {
			hs = now.Sub(p.LastHandshake).Round(time.Second).String() + " ago"
		}
		addr := ""
		if len(p.Addresses) > 0 {
			addr = p.Addresses[0].String()
		}
		fmt.Fprintf(&b, "<tr><td>%s</td><td>%s</td><td>%s</td><td class=\"%s\">%s</td><td>%s</td><td class=\"n\">%s</td><td class=\"n\">%s</td><td class=\"n\">%s</td><td>%s</td></tr>\n",
			esc(p.Name), esc(addr), esc(p.OS), class, status, esc(path), esc(lat), bytesStr(p.RxBytes), bytesStr(p.TxBytes), esc(hs))
	}
	b.WriteString("</tbody></table>\n")
	fmt.Fprintf(&b, "<footer>Updated %s; refreshes every %v. <a href=\"/metrics\">Metrics</a></footer>\n</body></html>\n",
		now.UTC().Format("2006-01-02 15:04:05 MST"), refresh)
	return b.Bytes()
}

func region(id int, codes map[int]string) string {
	if id == 0 {
		return "-"
	}
	if c := codes[id]; c != "" {
		return fmt.Sprintf("%d (%s)", id, c)
	}
	return fmt.Sprint(id)
}

func bytesStr(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// escapeHTML escapes text for HTML elements and attribute values. (The
// html package would link its table of entities, strings.Replacer its
// general machinery: 80 KB between them.)
func escapeHTML(s string) string {
	if !strings.ContainsAny(s, `&'<>"`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '&':
			b.WriteString("&amp;")
		case '\'':
			b.WriteString("&#39;")
		case '<':
			b.WriteString("&lt;")
		case '>':
			b.WriteString("&gt;")
		case '"':
			b.WriteString("&#34;")
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
