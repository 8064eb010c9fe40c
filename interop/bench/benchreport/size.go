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
