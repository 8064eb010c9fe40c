package tun

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/microlink-go/microlink/internal/bufpool"
	"github.com/microlink-go/microlink/internal/netlink"
)

const capNetAdmin = 12

// CheckAccess reports, without changing anything, why this process
// cannot run a TUN device: it lacks CAP_NET_ADMIN (root has it) or the
// kernel offers no /dev/net/tun.
func CheckAccess() error {
	eff, err := effectiveCaps()
	if err != nil {
		return fmt.Errorf("tun: reading the process's capabilities: %w", err)
	}
	if eff&(1<<capNetAdmin) == 0 {
		return errors.New("tun: TUN mode needs root (or the CAP_NET_ADMIN capability) to create the device and set its routes")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return fmt.Errorf("tun: TUN mode needs /dev/net/tun (the tun kernel module): %w", err)
	}
	return nil
}

// effectiveCaps returns the CapEff bits of /proc/self/status.
func effectiveCaps() (uint64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return 0, errors.New("no CapEff line")
}

// Device is an open TUN device. Read and Write move one IP packet each;
// they may be called concurrently with each other.
type Device struct {
	f     *os.File
	name  string
	index int
	mtu   int

	rbuf, seg []byte // ReadPackets' buffers, for its one caller at a time

	// Write queues copies of packets for the writer goroutine (see
	// gro_linux.go).
	wq        chan *[]byte
	kick      chan struct{} // wakes the writer: something is queued
	corks     atomic.Int32  // see Cork
	pool      *bufpool.Pool
	closing   chan struct{}
	closeOnce sync.Once
	wdone     chan struct{}
	gbuf      []byte   // the writer's: a virtio header and a packet of up to 64 KiB
	run       [][]byte // the writer's: packets being coalesced
	largeMu   sync.Mutex
	large     []byte // writeLarge's buffer, made on first use
	dropped   atomic.Uint64
	coalesced atomic.Uint64
	writeErrs atomic.Uint64

	writeRawHook func([]byte) // for tests: takes the writes instead of the device

	// Leftover reports that a device of this name was there already,
	// left by a run that was killed, and was taken over.
	Leftover bool
}

// Open creates the TUN device name, or takes over a leftover one, sets
// its MTU and brings it up, with no addresses. The device goes away when
// it is closed (or the process ends).
func Open(name string, mtu int) (*Device, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	_, existed := net.InterfaceByName(name)
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("tun: opening /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun: %w", err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		switch {
		case errors.Is(err, unix.EBUSY):
			return nil, fmt.Errorf("tun: device %s is in use by another process", name)
		case existed == nil && (errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EEXIST)):
			return nil, fmt.Errorf("tun: a network interface named %s exists and is not a free TUN device", name)
		}
		return nil, fmt.Errorf("tun: creating device %s: %w", name, err)
	}
	// A device made persistent by someone outlives its owner; ours goes
	// away with us.
	unix.IoctlSetInt(fd, unix.TUNSETPERSIST, 0)
	// TCP segmentation offload: the host hands over up to 64 KiB of a
	// TCP stream at once, and leaves checksums to the node. Without it
	// (an old kernel) packets come one by one with their checksums.
	unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, unix.TUN_F_CSUM|unix.TUN_F_TSO4|unix.TUN_F_TSO6)
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun: %w", err)
	}
	d := &Device{f: os.NewFile(uintptr(fd), "/dev/net/tun"), name: name, mtu: mtu, Leftover: existed == nil,
		rbuf: make([]byte, vnetHdrLen+1<<16), seg: make([]byte, mtu),
		wq: make(chan *[]byte, writeQueueLen), kick: make(chan struct{}, 1), pool: bufpool.New(writeQueueLen+maxBatch, mtu),
		closing: make(chan struct{}), wdone: make(chan struct{}),
		gbuf: make([]byte, vnetHdrLen, vnetHdrLen+maxCoalesced), run: make([][]byte, 0, maxBatch)}
	go d.writer()
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("tun: finding device %s: %w", name, err)
	}
	d.index = ifi.Index
	nl, err := netlink.DialRoute()
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("tun: %w", err)
	}
	defer nl.Close()
	if d.Leftover {
		// Its addresses are a killed run's.
		addrs, _ := nl.Addrs(d.index)
		for _, a := range addrs {
			nl.AddrDel(d.index, a)
		}
	}
	if err := nl.LinkSetMTU(d.index, mtu); err != nil {
		d.Close()
		return nil, fmt.Errorf("tun: setting the MTU of %s: %w", name, err)
	}
	if err := nl.LinkSetUp(d.index); err != nil {
		d.Close()
		return nil, fmt.Errorf("tun: bringing %s up: %w", name, err)
	}
	return d, nil
}

// Name returns the device's name.
func (d *Device) Name() string { return d.name }

// Index returns the device's interface index.
func (d *Device) Index() int { return d.index }

// ReadPackets reads what the host routed into the device next and calls
// fn with each packet of it: one packet, or the packets cut from a large
// TCP segment the host offloaded. The packet is valid only during the
// call. Malformed offloads are dropped. Only one goroutine may call
// ReadPackets at a time.
func (d *Device) ReadPackets(fn func(pkt []byte)) error {
	n, err := d.f.Read(d.rbuf)
	if err != nil {
		return err
	}
	if n <= vnetHdrLen {
		return nil
	}
	h := parseVnetHdr(d.rbuf)
	pkt := d.rbuf[vnetHdrLen:n]
	switch h.gsoType &^ gsoECN {
	case gsoNone:
		if h.flags&vnetNeedsCsum != 0 && completeCsum(pkt, int(h.csumStart), int(h.csumOffset)) != nil {
			return nil
		}
		fn(pkt)
	case gsoTCPv4, gsoTCPv6:
		segmentTCP(pkt, h, d.seg, fn)
	}
	return nil
}

// Write queues a copy of pkt for the host's IP stack. It may be called
// concurrently. When the queue is full (the host takes packets more
// slowly than they come), Write waits for the writer to make room: the
// caller, a socket's read loop, then reads more slowly, and the peers'
// TCP slows down by its window, as with a wireguard-go device, where
// dropping the packet would look like loss on the path and halve the
// sender's rate. A packet larger than the MTU, which peers do not
// normally send, is written at once instead, ahead of those queued.
func (d *Device) Write(pkt []byte) (int, error) {
	if len(pkt) > d.mtu {
		return d.writeLarge(pkt)
	}
	bp := d.pool.Get()
	n := copy(*bp, pkt)
	*bp = (*bp)[:n]
	select {
	case d.wq <- bp:
	case <-d.closing:
		d.pool.Put(bp)
		return 0, os.ErrClosed
	default:
		d.wake()
		select {
		case d.wq <- bp:
		case <-d.closing:
			d.pool.Put(bp)
			return 0, os.ErrClosed
		}
	}
	if d.corks.Load() == 0 || len(d.wq) >= writeQueueLen/2 {
		d.wake()
	}
	return n, nil
}

// Cork tells the device that more packets follow: Write queues them
// without waking the writer (unless the queue is half full), and the
// matching Uncork wakes it once for all of them, which it then writes
// together, coalesced where they continue one another. A caller that
// hands over a burst (the datagrams of one read from the network) corks
// around it. Corks from several goroutines nest: the writer waits for
// the last Uncork.
func (d *Device) Cork() { d.corks.Add(1) }

// Uncork undoes a Cork; the last one wakes the writer.
func (d *Device) Uncork() {
	switch n := d.corks.Add(-1); {
	case n < 0:
		d.corks.Add(1) // one Uncork too many
		d.wake()
	case n == 0:
		d.wake()
	}
}

func (d *Device) wake() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// writeLarge writes a packet larger than the MTU (up to 64 KiB) without
// queueing it.
func (d *Device) writeLarge(pkt []byte) (int, error) {
	d.largeMu.Lock()
	defer d.largeMu.Unlock()
	if d.large == nil {
		d.large = make([]byte, vnetHdrLen+maxCoalesced)
	}
	if len(pkt) > maxCoalesced {
		d.dropped.Add(1)
		return 0, errBadOffload
	}
	clear(d.large[:vnetHdrLen])
	n := copy(d.large[vnetHdrLen:], pkt)
	if _, err := d.f.Write(d.large[:vnetHdrLen+n]); err != nil {
		d.writeErrs.Add(1)
		return 0, err
	}
	return n, nil
}

// Stats are a device's counters.
type Stats struct {
	Dropped     uint64 // packets Write dropped: over 64 KiB
	Coalesced   uint64 // packets written as part of a coalesced one
	WriteErrors uint64 // writes the host refused
}

// Stats returns the device's counters.
func (d *Device) Stats() Stats {
	return Stats{Dropped: d.dropped.Load(), Coalesced: d.coalesced.Load(), WriteErrors: d.writeErrs.Load()}
}

// Close closes the device, which removes it from the host together with
// its addresses and the routes through it, and stops the writer; packets
// still queued are dropped. A blocked ReadPackets returns.
func (d *Device) Close() error {
	d.closeOnce.Do(func() { close(d.closing) })
	<-d.wdone
	return d.f.Close()
}
