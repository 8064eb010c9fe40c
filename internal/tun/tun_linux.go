package tun

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

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
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CapEff:"); ok {
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
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
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
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun: %w", err)
	}
	d := &Device{f: os.NewFile(uintptr(fd), "/dev/net/tun"), name: name, Leftover: existed == nil}
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

// Read reads one packet the host routed into the device.
func (d *Device) Read(b []byte) (int, error) { return d.f.Read(b) }

// Write hands one packet to the host's IP stack.
func (d *Device) Write(b []byte) (int, error) { return d.f.Write(b) }

// Close closes the device, which removes it from the host together with
// its addresses and the routes through it. Blocked Reads return.
func (d *Device) Close() error { return d.f.Close() }
