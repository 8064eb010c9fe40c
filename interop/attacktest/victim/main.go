// Victim is the microlink node that the attack suite (package attacktest)
// attacks: an ordinary node in a process of its own, so that its
// goroutines, heap and open files can be measured apart from the lab and
// the attacker, and built without the race detector, as it ships.
//
// Usage:
//
//	victim -control URL -authkey KEY -state DIR [-hostname NAME] [-tcp PORT]
//
// With -tcp it listens for TCP on that port with ListenTCP and answers
// the requests of package tcpxfer.
//
// Once the node is connected it prints one JSON line with its addresses,
// node key and UDP port. Then each line "stats" read from stdin is
// answered with one JSON line of Stats; "gc" collects garbage first. At
// the end of stdin the node is closed. Logs go to stderr.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"time"

	"github.com/microlink-go/microlink"
	"github.com/microlink-go/microlink/interop/tcpxfer"
)

// Ready is the first line the victim prints.
type Ready struct {
	Addresses []string
	NodeKey   string
}

// Stats is what the victim reports about itself.
type Stats struct {
	Goroutines int
	HeapInuse  uint64 // bytes in in-use heap spans, garbage not yet collected included
	HeapAlloc  uint64
	Sys        uint64 // bytes obtained from the OS by the Go runtime
	FDs        int    // open file descriptors
	Node       microlink.Stats
}

func main() {
	control := flag.String("control", "", "control server URL")
	authKey := flag.String("authkey", "", "auth key")
	state := flag.String("state", "", "state directory")
	hostname := flag.String("hostname", "victim", "hostname")
	tcpPort := flag.Int("tcp", 0, "serve tcpxfer on this TCP port")
	flag.Parse()
	if err := run(*control, *authKey, *state, *hostname, uint16(*tcpPort)); err != nil {
		fmt.Fprintln(os.Stderr, "victim:", err)
		os.Exit(1)
	}
}

func run(control, authKey, state, hostname string, tcpPort uint16) error {
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	n, err := microlink.New(microlink.Config{
		ControlURL: control,
		AuthKey:    authKey,
		Hostname:   hostname,
		StateDir:   state,
		Port:       -1,
		Logger:     logger,
	})
	if err != nil {
		return err
	}
	defer n.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		return err
	}
	if tcpPort != 0 {
		l, err := n.ListenTCP(tcpPort)
		if err != nil {
			return err
		}
		defer l.Close()
		go tcpxfer.Serve(l)
	}
	st := n.Status()
	ready := Ready{NodeKey: st.NodeKey}
	for _, a := range st.Addresses {
		ready.Addresses = append(ready.Addresses, a.String())
	}
	out := json.NewEncoder(os.Stdout)
	if err := out.Encode(ready); err != nil {
		return err
	}
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		switch in.Text() {
		case "gc":
			runtime.GC()
			fallthrough
		case "stats":
			if err := out.Encode(stats(n)); err != nil {
				return err
			}
		}
	}
	return nil
}

func stats(n *microlink.Node) Stats {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fds, _ := os.ReadDir("/proc/self/fd")
	return Stats{
		Goroutines: runtime.NumGoroutine(),
		HeapInuse:  ms.HeapInuse,
		HeapAlloc:  ms.HeapAlloc,
		Sys:        ms.Sys,
		FDs:        len(fds) - 1, // the directory being read
		Node:       n.Stats(),
	}
}
