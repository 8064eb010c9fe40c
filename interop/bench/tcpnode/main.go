// Tcpnode is the node under test of the TCP benchmark on impaired paths,
// in a process of its own so that its memory is its own. It joins the
// tailnet with microlink or with tsnet (tailscale.com's engine with
// gVisor's TCP, as tsnet and tailscaled's userspace networking run it),
// serves the tcpxfer protocol on a port of its tailnet address, and
// answers commands on stdin, one per line, with one JSON line on stdout:
//
//	mem      resident set, its high-water mark, the Go heap in use and
//	         all it ever allocated, in bytes, and the collections so far,
//	         after a collection that returns free memory to the system
//	peak     the high-water mark, without a collection
//	clear    resets the high-water mark to the current resident set
//	stats    microlink's Stats
//	profile PATH  starts a CPU profile written to PATH
//	stop     stops it
//
//	tcpnode -impl microlink|tsnet -control URL -authkey KEY -hostname NAME -dir DIR -port PORT
//
// It prints {"ready":"<tailnet IPv4>"} once serving. Built with -tags
// microlinkonly it leaves tsnet out, so that the memory of a microlink
// process is not inflated by code it never runs. It exits when stdin
// closes.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/microlink-go/microlink"
	"github.com/microlink-go/microlink/interop/tcpxfer"
)

type node interface {
	ip() netip.Addr
	listen(port uint16) (net.Listener, error)
	stats() any
	close()
}

func main() {
	impl := flag.String("impl", "microlink", "microlink or tsnet")
	control := flag.String("control", "", "control server URL")
	authKey := flag.String("authkey", "", "auth key")
	hostname := flag.String("hostname", "tcpnode", "node name")
	dir := flag.String("dir", "", "state directory")
	port := flag.Int("port", 9100, "port to serve on")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("tcpnode: ")

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
	l, err := n.listen(uint16(*port))
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	go tcpxfer.Serve(l)
	emit(map[string]any{"ready": n.ip().String()})

	var prof *os.File
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		switch strings.TrimSpace(in.Text()) {
		case "mem":
			runtime.GC()
			debug.FreeOSMemory()
			emit(memory())
		case "peak":
			emit(memory())
		case "clear":
			// Writing 5 to clear_refs resets VmHWM to the current RSS.
			err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
			emit(map[string]any{"err": fmt.Sprint(err)})
		case "stats":
			emit(map[string]any{"stats": n.stats()})
		case "stop":
			pprof.StopCPUProfile()
			var err error
			if prof != nil {
				err = prof.Close()
				prof = nil
			}
			emit(map[string]any{"err": fmt.Sprint(err)})
		default:
			if path, ok := strings.CutPrefix(strings.TrimSpace(in.Text()), "profile "); ok && prof == nil {
				f, err := os.Create(path)
				if err == nil {
					if err = pprof.StartCPUProfile(f); err != nil {
						f.Close()
					} else {
						prof = f
					}
				}
				emit(map[string]any{"err": fmt.Sprint(err)})
				continue
			}
			emit(map[string]any{"err": "unknown command"})
		}
	}
}

func emit(v map[string]any) {
	b, _ := json.Marshal(v)
	fmt.Println(string(b))
}

// memory returns the process's resident set, its high-water mark and
// the Go heap in use, in bytes.
func memory() map[string]any {
	m := map[string]any{}
	data, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			m["rss"] = kb << 10
		case "VmHWM:":
			m["hwm"] = kb << 10
		}
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m["heap"] = ms.HeapInuse
	m["total_alloc"] = ms.TotalAlloc
	m["gcs"] = ms.NumGC
	return m
}

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

func (m mlNode) ip() netip.Addr                           { return m.n.IPv4() }
func (m mlNode) listen(port uint16) (net.Listener, error) { return m.n.ListenTCP(port) }
func (m mlNode) stats() any                               { return m.n.Stats() }
func (m mlNode) close()                                   { m.n.Close() }
