// Udpload is one end of a UDP load test between two tailnet nodes, each
// in a process of its own so that its memory is its own. It joins the
// tailnet with microlink or with tsnet (tailscale.com's engine, as
// tailscaled runs it in userspace-networking mode), then either receives
// on a port or sends to one, and prints what it measured as one JSON
// line on stdout.
//
//	udpload -impl microlink|tsnet -control URL -authkey KEY -hostname NAME -dir DIR -listen PORT
//	udpload -impl microlink|tsnet -control URL -authkey KEY -hostname NAME -dir DIR -send IP:PORT -duration 5s
//
// Built with -tags microlinkonly it leaves tsnet out, so that the memory of
// a microlink process is not inflated by code it never runs.
//
// Before the load, both print {"ready":"<tailnet IPv4>"} with their memory
// so far. A receiver
// ends 2 s after the last datagram, or when stdin closes; a sender pings
// its destination through WireGuard first, then sends for -duration.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/microlink-go/microlink"
)

type node interface {
	ip() netip.Addr
	listen(port uint16) (net.PacketConn, error)
	dial(ctx context.Context, dst netip.AddrPort) (net.Conn, error)
	ping(ctx context.Context, dst netip.Addr) error
	close()
}

func main() {
	impl := flag.String("impl", "microlink", "microlink or tsnet")
	control := flag.String("control", "", "control server URL")
	authKey := flag.String("authkey", "", "auth key")
	hostname := flag.String("hostname", "udpload", "node name")
	dir := flag.String("dir", "", "state directory")
	listen := flag.Int("listen", 0, "receive on this port")
	send := flag.String("send", "", "send to this IP:port")
	duration := flag.Duration("duration", 5*time.Second, "how long to send")
	size := flag.Int("size", 1200, "datagram payload size")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("udpload: ")

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var n node
	var err error
	switch *impl {
	case "microlink":
		n, err = startMicrolink(ctx, *control, *authKey, *hostname, *dir)
	case "tsnet":
		n, err = startTSNet(ctx, *control, *authKey, *hostname, *dir)
	default:
		err = fmt.Errorf("unknown -impl %q", *impl)
	}
	if err != nil {
		log.Fatal(err)
	}
	defer n.close()
	emit(map[string]any{"ready": n.ip().String()})

	switch {
	case *listen > 0:
		err = receive(n, uint16(*listen))
	case *send != "":
		err = sendLoad(ctx, n, *send, *duration, *size)
	default:
		err = fmt.Errorf("need -listen or -send")
	}
	if err != nil {
		log.Fatal(err)
	}
}

func emit(v map[string]any) {
	rss, hwm := memory()
	v["rss_mb"], v["hwm_mb"] = rss, hwm
	b, _ := json.Marshal(v)
	fmt.Println(string(b))
}

// memory returns this process's resident set and its high-water mark in MB.
func memory() (rss, hwm float64) {
	data, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "VmRSS:":
			rss = kb * 1024 / 1e6
		case "VmHWM:":
			hwm = kb * 1024 / 1e6
		}
	}
	return rss, hwm
}

func receive(n node, port uint16) error {
	c, err := n.listen(port)
	if err != nil {
		return err
	}
	defer c.Close()
	stdinClosed := make(chan struct{})
	go func() { io.Copy(io.Discard, os.Stdin); close(stdinClosed) }()
	go func() { <-stdinClosed; c.Close() }()
	// A watchdog ends the run 2 s after the last datagram, also where a
	// read deadline does not wake a blocked read.
	var lastNano atomic.Int64
	go func() {
		for {
			time.Sleep(200 * time.Millisecond)
			if l := lastNano.Load(); l != 0 && time.Since(time.Unix(0, l)) > 2*time.Second {
				c.Close()
				return
			}
		}
	}()
	buf := make([]byte, 65536)
	var bytes, packets int64
	var first, last time.Time
	for {
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		nr, _, err := c.ReadFrom(buf)
		if err != nil {
			if first.IsZero() {
				select {
				case <-stdinClosed:
					return fmt.Errorf("nothing received")
				default:
					continue // still waiting for the sender
				}
			}
			break
		}
		now := time.Now()
		if first.IsZero() {
			first = now
		}
		last = now
		lastNano.Store(now.UnixNano())
		bytes += int64(nr)
		packets++
	}
	secs := last.Sub(first).Seconds()
	if secs <= 0 {
		secs = 1e-9
	}
	emit(map[string]any{"bytes": bytes, "packets": packets, "seconds": secs, "mb_per_s": float64(bytes) / secs / 1e6})
	return nil
}

func sendLoad(ctx context.Context, n node, dst string, d time.Duration, size int) error {
	ap, err := netip.ParseAddrPort(dst)
	if err != nil {
		return err
	}
	for {
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err := n.ping(pctx, ap.Addr())
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return fmt.Errorf("ping %v: %w", ap.Addr(), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	c, err := n.dial(ctx, ap)
	if err != nil {
		return err
	}
	defer c.Close()
	payload := make([]byte, size)
	var sent, errs int64
	start := time.Now()
	for time.Since(start) < d {
		c.SetWriteDeadline(time.Now().Add(time.Second))
		for range 64 {
			if _, err := c.Write(payload); err != nil {
				errs++
				continue
			}
			sent++
		}
	}
	emit(map[string]any{"sent": sent, "errors": errs, "seconds": time.Since(start).Seconds()})
	return nil
}

// microlink

type mlNode struct{ n *microlink.Node }

func startMicrolink(ctx context.Context, control, authKey, hostname, dir string) (node, error) {
	n, err := microlink.New(microlink.Config{
		AuthKey: authKey, ControlURL: control, Hostname: hostname, StateDir: dir, Port: -1,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		return nil, err
	}
	if err := n.Start(ctx); err != nil {
		n.Close()
		return nil, err
	}
	return mlNode{n}, nil
}

func (m mlNode) ip() netip.Addr { return m.n.IPv4() }
func (m mlNode) listen(port uint16) (net.PacketConn, error) {
	return m.n.ListenUDP(port)
}
func (m mlNode) dial(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	return m.n.DialUDP(ctx, dst.String())
}
func (m mlNode) ping(ctx context.Context, dst netip.Addr) error {
	_, err := m.n.Ping(ctx, dst.String(), microlink.PingTSMP)
	return err
}
func (m mlNode) close() { m.n.Close() }
