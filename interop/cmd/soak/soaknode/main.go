// Soaknode is the microlink node of the soak (interop/cmd/soak): a node
// with a UDP echo and nothing else linked in, so that its memory is a
// node's. It answers each "sample" line on stdin with a JSON line on
// stdout about itself (goroutines, live heap, state, counters) and logs to
// stderr. It stops when stdin closes.
package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/microlink-go/microlink"
)

// sample is what the node reports about itself.
type sample struct {
	IPv4             netip.Addr `json:"ipv4"`
	NodeKey          string     `json:"nodeKey"`
	State            string     `json:"state"`
	Goroutines       int        `json:"goroutines"`
	HeapInuse        uint64     `json:"heapInuse"`
	MapUpdates       uint64     `json:"mapUpdates"`
	RegisterRequests uint64     `json:"registerRequests"`
	Err              string     `json:"err,omitempty"`
}

func main() {
	control := flag.String("control", "", "control URL")
	authKey := flag.String("authkey", "", "auth key")
	stateDir := flag.String("statedir", "", "state directory")
	hostname := flag.String("hostname", "soak-ml", "hostname")
	port := flag.Int("port", 9000, "UDP echo port on the node's tailnet address")
	debug := flag.Bool("debug", false, "log at debug level")
	flag.Parse()
	os.Exit(run(*control, *authKey, *stateDir, *hostname, uint16(*port), *debug))
}

func run(control, authKey, stateDir, hostname string, port uint16, debug bool) int {
	level := slog.LevelInfo
	if debug {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	n, err := microlink.New(microlink.Config{
		AuthKey:    authKey,
		ControlURL: control,
		Hostname:   hostname,
		StateDir:   stateDir,
		Port:       -1,
		Logger:     logger,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "soaknode:", err)
		return 1
	}
	defer n.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	err = n.Start(ctx)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "soaknode: Start:", err)
		return 1
	}
	echo, err := n.ListenUDP(port)
	if err != nil {
		fmt.Fprintln(os.Stderr, "soaknode:", err)
		return 1
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 2048)
		for {
			m, from, err := echo.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			_, err = echo.WriteToUDPAddrPort(buf[:m], from)
			var seq uint64
			if m == 12 {
				seq = binary.BigEndian.Uint64(buf[4:12])
			}
			logger.Debug("soak: echo", "from", from, "seq", seq, "err", err)
		}
	}()
	defer func() { echo.Close(); wg.Wait() }()

	report := func() sample {
		// After a collection, HeapInuse is the live heap rather than
		// wherever the collector's cycle happens to be.
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		st := n.Stats()
		return sample{
			IPv4: n.IPv4(), NodeKey: n.Status().NodeKey, State: n.State().String(),
			Goroutines: runtime.NumGoroutine(), HeapInuse: ms.HeapInuse,
			MapUpdates: st.MapUpdates, RegisterRequests: st.RegisterRequests,
		}
	}
	out := json.NewEncoder(os.Stdout)
	out.Encode(report())
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if in.Text() != "sample" {
			out.Encode(sample{Err: "unknown request " + in.Text()})
			continue
		}
		out.Encode(report())
	}
	return 0
}
