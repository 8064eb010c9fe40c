// Package linkemu is a userspace link emulator for the interop tests and
// benchmarks: the kernels here have no sch_netem, so it bridges two veth
// interfaces in a network namespace of its own with AF_PACKET sockets and
// impairs what crosses, each direction on its own: a fixed delay, random
// (Bernoulli) or bursty (Gilbert-Elliott) loss per datagram, and a queue
// bound. GSO super-packets, as tailscaled sends, are cut into the
// datagrams and segments that a real link would carry before loss is
// applied. Path builds the namespaces and interfaces around it.
package linkemu

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Impairment is what one direction of the link does to IPv4 packets;
// other frames (ARP) cross at once.
type Impairment struct {
	// Delay is the one-way delay.
	Delay time.Duration
	// Loss is the probability that a packet is lost (Bernoulli).
	Loss float64
	// BurstEnter and BurstLeave make loss bursty (Gilbert-Elliott):
	// each packet moves the link from the good state to the bad one with
	// probability BurstEnter, or back with BurstLeave; in the bad state
	// every packet is lost. The mean loss is BurstEnter/(BurstEnter +
	// BurstLeave) and the mean burst 1/BurstLeave packets.
	BurstEnter, BurstLeave float64
	// Queue bounds the packets in flight in this direction: 10000.
	// Beyond, packets are dropped at the tail.
	Queue int
}

// Counters of one direction.
type Counters struct {
	Packets    uint64 // IPv4 packets in (after cutting super-packets)
	Lost       uint64 // lost by the impairment
	QueueDrops uint64 // dropped at the queue's tail
	Sent       uint64 // sent out
	// UDP packets and payload bytes sent out whose ports are not in
	// Path.Exclude: the direct WireGuard path, not STUN.
	UDP, UDPBytes uint64
}

// direction carries frames from one interface to the other.
type direction struct {
	in, out *os.File
	rng     *rand.Rand
	bad     bool
	exclude atomic.Pointer[map[uint16]bool]

	mu    sync.Mutex
	imp   Impairment
	cond  *sync.Cond
	queue []queued // FIFO: equal delays keep the order
	free  [][]byte
	stop  bool

	packets, lost, qdrops, sent, udp, udpBytes atomic.Uint64
}

type queued struct {
	due   time.Time
	frame []byte
}

// Emulator bridges two interfaces.
type Emulator struct {
	dirs [2]*direction
	wg   sync.WaitGroup
	once sync.Once
}

// openPacket opens a non-blocking AF_PACKET socket on interface ifname
// of the calling thread's namespace, with virtio_net_hdr, seeing only
// frames that arrive on it.
func openPacket(ifname string) (*os.File, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, err
	}
	proto := int(htons(unix.ETH_P_ALL))
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, proto)
	if err != nil {
		return nil, fmt.Errorf("linkemu: packet socket: %w", err)
	}
	for _, o := range [][2]int{{unix.PACKET_VNET_HDR, 1}, {unix.PACKET_IGNORE_OUTGOING, 1}} {
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, o[0], o[1]); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("linkemu: packet socket option %d: %w", o[0], err)
		}
	}
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20)
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 16<<20)
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("linkemu: bind to %s: %w", ifname, err)
	}
	return os.NewFile(uintptr(fd), "packet:"+ifname), nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// newEmulator bridges interfaces a and b of namespace ns: aToB impairs
// what arrives on a and leaves on b, bToA the other way.
func newEmulator(ns, a, b string, aToB, bToA Impairment, seed uint64, exclude []uint16) (*Emulator, error) {
	var fa, fb *os.File
	err := In(ns, func() (err error) {
		if fa, err = openPacket(a); err != nil {
			return err
		}
		if fb, err = openPacket(b); err != nil {
			fa.Close()
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	e := &Emulator{}
	for i, d := range []struct {
		imp     Impairment
		in, out *os.File
	}{{aToB, fa, fb}, {bToA, fb, fa}} {
		if d.imp.Queue <= 0 {
			d.imp.Queue = 10000
		}
		dir := &direction{imp: d.imp, in: d.in, out: d.out, rng: rand.New(rand.NewPCG(seed, uint64(i)))}
		dir.cond = sync.NewCond(&dir.mu)
		e.dirs[i] = dir
	}
	e.Exclude(exclude...)
	for _, d := range e.dirs {
		e.wg.Add(2)
		go func() { defer e.wg.Done(); d.read() }()
		go func() { defer e.wg.Done(); d.write() }()
	}
	return e, nil
}

// Set changes the impairments of direction a to b and b to a. Packets
// already delayed keep their time.
func (e *Emulator) Set(aToB, bToA Impairment) {
	for i, imp := range []Impairment{aToB, bToA} {
		if imp.Queue <= 0 {
			imp.Queue = 10000
		}
		d := e.dirs[i]
		d.mu.Lock()
		d.imp, d.bad = imp, false
		d.mu.Unlock()
	}
}

// Reseed restarts the loss of both directions from seed, in the good
// state, so that transfers started after the same seed meet the same
// loss pattern: the nth packet of a direction is lost or not alike.
func (e *Emulator) Reseed(seed uint64) {
	for i, d := range e.dirs {
		d.mu.Lock()
		d.rng, d.bad = rand.New(rand.NewPCG(seed, uint64(i))), false
		d.mu.Unlock()
	}
}

// Exclude sets the UDP ports whose packets are not counted as the direct
// path's.
func (e *Emulator) Exclude(ports ...uint16) {
	ex := map[uint16]bool{}
	for _, p := range ports {
		ex[p] = true
	}
	for _, d := range e.dirs {
		d.exclude.Store(&ex)
	}
}

// Close stops the emulator; frames in flight are dropped.
func (e *Emulator) Close() {
	e.once.Do(func() {
		for _, d := range e.dirs {
			d.mu.Lock()
			d.stop = true
			d.cond.Broadcast()
			d.mu.Unlock()
		}
		for _, d := range e.dirs {
			d.in.Close() // wakes its reader; each file is one reader's and the other's writer
		}
		e.wg.Wait()
	})
}

// Counters returns the counters of direction a to b (0) or b to a (1).
func (e *Emulator) Counters(dir int) Counters {
	d := e.dirs[dir]
	return Counters{Packets: d.packets.Load(), Lost: d.lost.Load(), QueueDrops: d.qdrops.Load(),
		Sent: d.sent.Load(), UDP: d.udp.Load(), UDPBytes: d.udpBytes.Load()}
}

// read takes frames in, cuts them, applies loss and queues them.
func (d *direction) read() {
	rc, err := d.in.SyscallConn()
	if err != nil {
		return
	}
	buf := make([]byte, vnetHdrLen+65536+256)
	scratch := make([]byte, 0, 2048)
	for {
		var n int
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			n, rerr = unix.Read(int(fd), buf)
			return rerr != unix.EAGAIN
		})
		if err != nil || errors.Is(rerr, unix.EBADF) {
			return
		}
		if rerr != nil || n < vnetHdrLen {
			continue
		}
		now := time.Now()
		cut(buf[:vnetHdrLen], buf[vnetHdrLen:n], scratch, func(f []byte) { d.admit(f, now) })
	}
}

// admit decides the fate of one wire frame.
func (d *direction) admit(f []byte, now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	due := now
	if len(f) >= ethLen && binary.BigEndian.Uint16(f[12:14]) == etherTypeIP4 {
		d.packets.Add(1)
		if d.lose() {
			d.lost.Add(1)
			return
		}
		due = now.Add(d.imp.Delay)
	}
	if d.stop {
		return
	}
	if len(d.queue) >= d.imp.Queue {
		d.qdrops.Add(1)
		return
	}
	var b []byte
	if k := len(d.free); k > 0 {
		b, d.free = d.free[k-1][:0], d.free[:k-1]
	}
	d.queue = append(d.queue, queued{due, append(b, f...)})
	if len(d.queue) == 1 {
		d.cond.Signal()
	}
}

// lose applies the loss model to one packet. Called with mu held.
func (d *direction) lose() bool {
	if d.imp.BurstEnter > 0 {
		if d.bad {
			d.bad = d.rng.Float64() >= d.imp.BurstLeave
		} else {
			d.bad = d.rng.Float64() < d.imp.BurstEnter
		}
		if d.bad {
			return true
		}
	}
	return d.imp.Loss > 0 && d.rng.Float64() < d.imp.Loss
}

// write sends the queued frames when they are due, in order.
func (d *direction) write() {
	rc, err := d.out.SyscallConn()
	if err != nil {
		return
	}
	out := make([]byte, vnetHdrLen+65536)
	d.mu.Lock()
	for {
		for len(d.queue) == 0 && !d.stop {
			d.cond.Wait()
		}
		if d.stop {
			d.mu.Unlock()
			return
		}
		q := d.queue[0]
		if wait := time.Until(q.due); wait > 0 {
			d.mu.Unlock()
			time.Sleep(wait)
			d.mu.Lock()
			continue
		}
		d.queue[0] = queued{}
		d.queue = d.queue[1:]
		if len(d.queue) == 0 {
			d.queue = d.queue[:0:0] // let a long-grown array go
		}
		d.mu.Unlock()

		clear(out[:vnetHdrLen])
		n := vnetHdrLen + copy(out[vnetHdrLen:], q.frame)
		var werr error
		rc.Write(func(fd uintptr) bool {
			_, werr = unix.Write(int(fd), out[:n])
			return werr != unix.EAGAIN
		})
		if werr == nil {
			d.count(q.frame)
		}
		d.mu.Lock()
		if len(d.free) < 4096 {
			d.free = append(d.free, q.frame)
		}
	}
}

// count counts a frame sent out.
func (d *direction) count(f []byte) {
	d.sent.Add(1)
	p, ok := parseFrame(f)
	ex := *d.exclude.Load()
	if !ok || p.v6 || p.proto != protoUDP || ex[p.l4Port[0]] || ex[p.l4Port[1]] {
		return
	}
	d.udp.Add(1)
	d.udpBytes.Add(uint64(len(f) - p.l4Off - 8))
}

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0)) }
