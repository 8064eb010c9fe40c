package main

import (
	"debug/elf"
	"fmt"
	"sort"
	"strings"
)

// sizeBreakdown describes what an unstripped binary is made of: the
// sizes of its main sections and its code per package.
func sizeBreakdown(path string, top int) (string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var b strings.Builder
	b.WriteString("| section | size |\n|---|---:|\n")
	textIdx := -1
	for i, s := range f.Sections {
		switch s.Name {
		case ".text", ".rodata", ".gopclntab", ".typelink", ".itablink", ".noptrdata", ".data", ".go.buildinfo":
			fmt.Fprintf(&b, "| %s | %.2f MiB |\n", s.Name, float64(s.Size)/(1<<20))
		}
		if s.Name == ".text" {
			textIdx = i
		}
	}
	syms, err := f.Symbols()
	if err != nil {
		return "", err
	}
	perPkg := map[string]uint64{}
	var total uint64
	for _, s := range syms {
		if int(s.Section) != textIdx {
			continue
		}
		perPkg[symbolPackage(s.Name)] += s.Size
		total += s.Size
	}
	type kv struct {
		pkg  string
		size uint64
	}
	var list []kv
	for k, v := range perPkg {
		list = append(list, kv{k, v})
	}
	sort.Slice(list, func(i, j int) bool { return list[i].size > list[j].size })
	b.WriteString("\n| package (code in .text) | size | share |\n|---|---:|---:|\n")
	for i, x := range list {
		if i == top {
			break
		}
		fmt.Fprintf(&b, "| %s | %.0f KiB | %.1f%% |\n", x.pkg, float64(x.size)/1024, 100*float64(x.size)/float64(total))
	}
	return b.String(), nil
}

// symbolPackage returns the import path of the package a Go symbol
// belongs to: everything up to the first dot after the last slash.
func symbolPackage(name string) string {
	if i := strings.IndexByte(name, '['); i >= 0 {
		name = name[:i]
	}
	slash := strings.LastIndexByte(name, '/')
	if dot := strings.IndexByte(name[slash+1:], '.'); dot >= 0 {
		return name[:slash+1+dot]
	}
	return name
}

// sizeFloor explains whether the size goal can be reached in Go at all,
// from the rows that scripts/bench.sh adds next to microlink: the size
// floor of any Go client, that floor with net/http's client (which
// microlink does without), and microlink as a library without its CLI.
func (r *report) sizeFloor(smallest int64) {
	size := func(name string) int64 {
		s, _ := r.read("sizes.tsv")
		for _, line := range strings.Split(s, "\n") {
			f := strings.Split(line, "\t")
			if len(f) >= 3 && f[0] == name && f[1] == "linux/amd64" {
				var n int64
				if _, err := fmt.Sscan(f[2], &n); err == nil {
					return n
				}
			}
		}
		return -1
	}
	floor, floorHTTP := size("size floor (tls, json, slog, net)"), size("size floor + net/http client")
	lib, cli := size("microlink library only (examples/basic_connect)"), size("microlink")
	if floor < 0 && lib < 0 {
		return
	}
	r.p("")
	r.p("**Can Go reach the goal?** *size floor* (interop/bench/sizefloor) is a program that does only what no")
	r.p("Tailscale client can do without: it dials TLS (crypto/tls, and with it crypto/x509), encodes and decodes JSON,")
	r.p("logs with log/slog and sends a UDP datagram (net), built with the same flags. It holds none of the protocol.")
	if floor > 0 && smallest > 0 {
		goal := smallest / 3
		verdict := "the floor alone is over the goal, so no Go client built on the standard library's crypto/tls, encoding/json, log/slog and net can meet it, whatever its own code"
		if floor <= goal {
			verdict = fmt.Sprintf("the floor is under the goal, leaving %s for everything else", mib(goal-floor))
		}
		r.p("It is %s, the goal %s: %s.", mib(floor), mib(goal), verdict)
	}
	if floor > 0 && floorHTTP > 0 {
		r.p("net/http's client (with its bundled HTTP/2) would add %s to it; microlink does without it.", mib(floorHTTP-floor))
	}
	if lib > 0 && cli > 0 {
		r.p("microlink as a library (examples/basic_connect: the node without the CLI and its local API server) is %s;", mib(lib))
		r.p("the CLI adds %s.", mib(cli-lib))
	}
	if lib > 0 && floor > 0 {
		r.p("The library is %s over the floor: the protocol's own code (with its HTTP/2, HTTP/1.1 and TCP), x/crypto,", mib(lib-floor))
		r.p("zstd and the rest.")
	}
}
