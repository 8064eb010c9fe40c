package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"strings"

	"github.com/microlink-go/microlink"
)

// whoisJSON is "whois --json", in the shape of tailscale's.
type whoisJSON struct {
	Node struct {
		ID        string
		Name      string // full MagicDNS name with its trailing dot
		HostName  string
		Addresses []string
		Tags      []string `json:",omitempty"`
		OS        string   `json:",omitempty"`
		Self      bool     `json:",omitempty"`
	}
	UserProfile userJSON
}

func whoisOf(w microlink.WhoIsResult) whoisJSON {
	var out whoisJSON
	out.Node.ID, out.Node.Name, out.Node.HostName = w.Node.StableID, dnsName(w.Node.FQDN), w.Node.Hostname
	if out.Node.HostName == "" {
		out.Node.HostName = w.Node.Name
	}
	out.Node.Addresses = prefixesOf(w.Node.Addresses)
	out.Node.Tags, out.Node.OS, out.Node.Self = w.Tags, w.Node.OS, w.Self
	out.UserProfile = userJSON(w.User)
	return out
}

// netcheckJSON is the local API's netcheck report.
type netcheckJSON struct {
	UDP                   bool
	IPv4, IPv6            bool
	GlobalV4, GlobalV6    string `json:",omitempty"`
	MappingVariesByDestIP *bool  `json:",omitempty"`
	PreferredDERP         int
	RegionLatency         []regionLatencyJSON
}

type regionLatencyJSON struct {
	ID        int
	Code      string
	Name      string
	LatencyMS float64
}

func netcheckOf(r microlink.NetcheckReport) netcheckJSON {
	out := netcheckJSON{UDP: r.UDP, IPv4: r.GlobalV4.IsValid(), IPv6: r.GlobalV6.IsValid(), PreferredDERP: r.PreferredDERP}
	if r.GlobalV4.IsValid() {
		out.GlobalV4 = r.GlobalV4.String()
	}
	if r.GlobalV6.IsValid() {
		out.GlobalV6 = r.GlobalV6.String()
	}
	if r.MappingKnown {
		v := r.MappingVariesByDestIP
		out.MappingVariesByDestIP = &v
	}
	for _, rl := range r.Regions {
		out.RegionLatency = append(out.RegionLatency, regionLatencyJSON{rl.ID, rl.Code, rl.Name, ms(rl.Latency)})
	}
	return out
}

func runDown(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("down", usageOf("down"), stderr)
	socket, statedir := addSocketFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	c, err := daemonClient(*socket, *statedir)
	if err != nil {
		return err
	}
	if err := c.do("POST", "/down", nil); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "microlink is down: disconnected from the tailnet ('microlink up' reconnects)")
	return nil
}

func runIP(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("ip", usageOf("ip"), stderr)
	only4 := fs.Bool("4", false, "print only the IPv4 address")
	only6 := fs.Bool("6", false, "print only the IPv6 address")
	socket, statedir := addSocketFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *only4 && *only6 {
		fmt.Fprintln(stderr, "microlink ip: -4 and -6 exclude each other")
		return errUsage
	}
	if fs.NArg() > 1 {
		fmt.Fprintln(stderr, "microlink ip: at most one peer")
		return errUsage
	}
	c, err := daemonClient(*socket, *statedir)
	if err != nil {
		return err
	}
	var st statusJSON
	if err := c.do("GET", "/status", &st); err != nil {
		return err
	}
	ips := st.TailscaleIPs
	if fs.NArg() == 1 {
		p := findPeer(st, fs.Arg(0))
		if p == nil {
			return fmt.Errorf("no peer %q in the tailnet", fs.Arg(0))
		}
		ips = p.TailscaleIPs
	}
	printed := 0
	for _, s := range ips {
		ip, err := netip.ParseAddr(s)
		if err != nil || (*only4 && !ip.Is4()) || (*only6 && !ip.Is6()) {
			continue
		}
		fmt.Fprintln(stdout, ip)
		printed++
	}
	if printed == 0 {
		return errors.New("no such address (yet)")
	}
	return nil
}

// findPeer finds a peer by short name, MagicDNS name, host name or address.
func findPeer(st statusJSON, q string) *peerStatus {
	q = strings.TrimSuffix(strings.ToLower(q), ".")
	for _, p := range sortedPeers(st) {
		if strings.EqualFold(shortName(p), q) || strings.EqualFold(strings.TrimSuffix(p.DNSName, "."), q) || strings.EqualFold(p.HostName, q) {
			return p
		}
		for _, a := range p.TailscaleIPs {
			if a == q {
				return p
			}
		}
	}
	return nil
}

func runWhois(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("whois", usageOf("whois"), stderr)
	asJSON := fs.Bool("json", false, "print the answer as JSON")
	socket, statedir := addSocketFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "microlink whois: want exactly one IP or IP:PORT")
		return errUsage
	}
	c, err := daemonClient(*socket, *statedir)
	if err != nil {
		return err
	}
	var w whoisJSON
	if err := c.do("GET", "/whois?addr="+url.QueryEscape(fs.Arg(0)), &w); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, w)
	}
	tw := newTable(stdout, 1)
	fmt.Fprintln(tw, "Machine:")
	fmt.Fprintf(tw, "  Name:\t%s\n", strings.TrimSuffix(w.Node.Name, "."))
	fmt.Fprintf(tw, "  ID:\t%s\n", w.Node.ID)
	fmt.Fprintf(tw, "  Addresses:\t%s\n", strings.Join(w.Node.Addresses, " "))
	if len(w.Node.Tags) > 0 {
		fmt.Fprintf(tw, "  Tags:\t%s\n", strings.Join(w.Node.Tags, ", "))
	}
	if len(w.Node.Tags) == 0 || w.UserProfile.LoginName != "" {
		fmt.Fprintln(tw, "User:")
		fmt.Fprintf(tw, "  Name:\t%s\n", w.UserProfile.LoginName)
		fmt.Fprintf(tw, "  ID:\t%d\n", w.UserProfile.ID)
	}
	return tw.Flush()
}

func runNetcheck(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("netcheck", usageOf("netcheck"), stderr)
	asJSON := fs.Bool("json", false, "print the report as JSON")
	socket, statedir := addSocketFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	c, err := daemonClient(*socket, *statedir)
	if err != nil {
		return err
	}
	var r netcheckJSON
	if err := c.do("POST", "/netcheck", &r); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, r)
	}
	printNetcheck(stdout, r)
	return nil
}

func printNetcheck(w io.Writer, r netcheckJSON) {
	yes := func(ok bool, addr string) string {
		if !ok {
			return "no"
		}
		return "yes, " + addr
	}
	fmt.Fprintln(w, "\nReport:")
	fmt.Fprintf(w, "\t* UDP: %v\n", r.UDP)
	fmt.Fprintf(w, "\t* IPv4: %s\n", yes(r.IPv4, r.GlobalV4))
	fmt.Fprintf(w, "\t* IPv6: %s\n", yes(r.IPv6, r.GlobalV6))
	if r.MappingVariesByDestIP != nil {
		fmt.Fprintf(w, "\t* MappingVariesByDestIP: %v\n", *r.MappingVariesByDestIP)
	} else {
		fmt.Fprintln(w, "\t* MappingVariesByDestIP: (unknown: fewer than two STUN servers answered)")
	}
	nearest := ""
	for _, rl := range r.RegionLatency {
		if rl.ID == r.PreferredDERP {
			nearest = rl.Name
			if nearest == "" {
				nearest = rl.Code
			}
		}
	}
	if nearest == "" && r.PreferredDERP != 0 {
		nearest = fmt.Sprintf("region %d", r.PreferredDERP)
	}
	fmt.Fprintf(w, "\t* Nearest DERP: %s\n", nearest)
	fmt.Fprintln(w, "\t* DERP latency:")
	for _, rl := range r.RegionLatency {
		code := rl.Code
		if code == "" {
			code = fmt.Sprint(rl.ID)
		}
		fmt.Fprintf(w, "\t\t- %s: %.1fms (%s)\n", code, rl.LatencyMS, rl.Name)
	}
}

// daemonClient returns a client of the daemon found by --socket or
// --statedir.
func daemonClient(socket, statedir string) (*client, error) {
	path, err := socketPath(socket, statedir)
	if err != nil {
		return nil, err
	}
	return newClient(path), nil
}

// printJSON writes v as indented JSON.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
