package main

import (
	"bytes"
	"io"
	"strings"
	"unicode/utf8"
)

// table aligns tab-separated columns as text/tabwriter does with a
// minimum width of 0, space padding and no flags: a cell ends with a tab,
// the text after a line's last tab is not part of a column, and a column's
// width, its widest cell plus padding, is set over each run of lines that
// have a cell in it.
type table struct {
	w       io.Writer
	padding int
	buf     bytes.Buffer
}

func newTable(w io.Writer, padding int) *table { return &table{w: w, padding: padding} }

func (t *table) Write(p []byte) (int, error) { return t.buf.Write(p) }

// Flush writes the aligned text.
func (t *table) Flush() error {
	var lines [][]string
	for _, line := range strings.Split(t.buf.String(), "\n") {
		lines = append(lines, strings.Split(line, "\t"))
	}
	if last := lines[len(lines)-1]; len(last) > 1 && last[len(last)-1] == "" {
		lines[len(lines)-1] = last[:len(last)-1] // an unfinished line's empty last cell is no cell
	}
	t.buf.Reset()
	var out bytes.Buffer
	t.format(&out, lines, nil)
	_, err := t.w.Write(out.Bytes()[:out.Len()-1]) // the last line has no newline
	return err
}

// format writes lines with the widths of the enclosing columns, finding
// the blocks of the next column among them.
func (t *table) format(out *bytes.Buffer, lines [][]string, widths []int) {
	col := len(widths)
	start := 0
	for i := 0; i < len(lines); i++ {
		if col >= len(lines[i])-1 {
			continue
		}
		t.write(out, lines[start:i], widths)
		width := 0
		end := i
		for ; end < len(lines) && col < len(lines[end])-1; end++ {
			width = max(width, utf8.RuneCountInString(lines[end][col])+t.padding)
		}
		t.format(out, lines[i:end], append(widths, width))
		start, i = end, end-1
	}
	t.write(out, lines[start:], widths)
}

func (t *table) write(out *bytes.Buffer, lines [][]string, widths []int) {
	for _, cells := range lines {
		for j, c := range cells {
			out.WriteString(c)
			if j < len(widths) {
				for n := utf8.RuneCountInString(c); n < widths[j]; n++ {
					out.WriteByte(' ')
				}
			}
		}
		out.WriteByte('\n')
	}
}
