package linkemu

import (
	"fmt"
	"net/netip"
	"os"
	"sync/atomic"
)

// Path is an emulated link between the caller's network namespace and a
// peer namespace of its own:
//
//	caller's namespace          emulator namespace          peer namespace
//	  ml-e<N>: Local  ── veth ──  ea [Emulator] eb  ── veth ──  eth0: Peer
//
// Local is 198.18.N.1/24 and Peer 198.18.N.2/24, one Ethernet segment
// through the emulator. Servers the peer must reach listen on Local.
type Path struct {
	N           int
	Local, Peer netip.Addr
	PeerNS      string // the peer's namespace
	EmuNS       string // the emulator's namespace
	Emulator    *Emulator
	localIf     string
}

var pathSeq atomic.Int32

// PathOptions configure NewPath.
type PathOptions struct {
	// Out impairs packets from the caller's namespace to the peer, In
	// the other way.
	Out, In Impairment
	// Seed seeds the loss; runs with the same seed see the same loss
	// pattern for the same packets.
	Seed uint64
	// Exclude lists UDP ports whose packets are not counted as the
	// direct path's (the STUN server's).
	Exclude []uint16
}

// NewPath builds a path. It needs root, the ip command and a network
// namespace of the caller's own (see lab.RunInNetns): it adds an
// interface and an address to it. Close tears everything down.
func NewPath(o PathOptions) (_ *Path, err error) {
	n := int(pathSeq.Add(1)) + 100
	if n > 250 {
		return nil, fmt.Errorf("linkemu: too many paths")
	}
	p := &Path{
		N:       n,
		Local:   netip.AddrFrom4([4]byte{198, 18, byte(n), 1}),
		Peer:    netip.AddrFrom4([4]byte{198, 18, byte(n), 2}),
		PeerNS:  fmt.Sprintf("mlpeer%d-%d", os.Getpid(), n),
		EmuNS:   fmt.Sprintf("mlemu%d-%d", os.Getpid(), n),
		localIf: fmt.Sprintf("ml-e%d", n),
	}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	steps := [][]string{
		{"netns", "add", p.PeerNS},
		{"netns", "add", p.EmuNS},
		{"-n", p.PeerNS, "link", "set", "lo", "up"},
		{"-n", p.EmuNS, "link", "set", "lo", "up"},
		{"link", "add", p.localIf, "type", "veth", "peer", "name", "ea", "netns", p.EmuNS},
		{"link", "add", "ml-p" + fmt.Sprint(n), "type", "veth", "peer", "name", "eb", "netns", p.EmuNS},
		{"link", "set", "ml-p" + fmt.Sprint(n), "netns", p.PeerNS, "name", "eth0"},
		{"addr", "add", p.Local.String() + "/24", "dev", p.localIf},
		{"link", "set", p.localIf, "up"},
		{"-n", p.PeerNS, "addr", "add", p.Peer.String() + "/24", "dev", "eth0"},
		{"-n", p.PeerNS, "link", "set", "eth0", "up"},
		{"-n", p.EmuNS, "link", "set", "dev", "ea", "up", "promisc", "on"},
		{"-n", p.EmuNS, "link", "set", "dev", "eb", "up", "promisc", "on"},
	}
	for _, s := range steps {
		if err := run("ip", s...); err != nil {
			return nil, err
		}
	}
	// The emulator's namespace must not answer or send anything itself.
	run("ip", "netns", "exec", p.EmuNS, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
	p.Emulator, err = newEmulator(p.EmuNS, "ea", "eb", o.Out, o.In, o.Seed, o.Exclude)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// Counters returns the emulator's counters of packets to the peer (out)
// and from it (in).
func (p *Path) Counters() (out, in Counters) {
	return p.Emulator.Counters(0), p.Emulator.Counters(1)
}

// Close stops the emulator and deletes the namespaces and interfaces.
func (p *Path) Close() {
	if p.Emulator != nil {
		p.Emulator.Close()
	}
	run("ip", "link", "del", p.localIf)
	run("ip", "netns", "del", p.EmuNS)
	run("ip", "netns", "del", p.PeerNS)
}
