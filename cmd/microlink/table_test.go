package main

import (
	"bytes"
	"fmt"
	"math/rand"
	"strings"
	"testing"
	"text/tabwriter"
)

// TestTableMatchesTabwriter: table lays out text as text/tabwriter does
// with the settings the commands used, on the commands' own shapes and on
// random ones.
func TestTableMatchesTabwriter(t *testing.T) {
	inputs := []string{
		"",
		"no tabs\n",
		"100.64.0.1\tself\tlinux\tRunning\n\tlog in at:\thttps://login.example/a\t\n100.64.0.2\tpeer\tlinux\tonline\tdirect 1.2.3.4:41641\t12ms\trx 1 tx 2\n",
		"Machine:\n  Name:\tnode\n  ID:\t7\n  Addresses:\t100.64.0.1/32\nUser:\n  Name:\tbob@example.com\n  ID:\t3\n",
		"a\tb\tc\nlonger cell\tx\n\tünïcode\ty\nend",
	}
	r := rand.New(rand.NewSource(1))
	for i := 0; i < 300; i++ {
		var b strings.Builder
		for n := r.Intn(8); n > 0; n-- {
			for c := r.Intn(5); c > 0; c-- {
				b.WriteString(strings.Repeat("é", r.Intn(3)) + strings.Repeat("x", r.Intn(12)))
				b.WriteByte('\t')
			}
			b.WriteString(strings.Repeat("t", r.Intn(4)))
			if r.Intn(6) != 0 {
				b.WriteByte('\n')
			}
		}
		inputs = append(inputs, b.String())
	}
	for _, in := range inputs {
		for _, pad := range []int{1, 2} {
			var want, got bytes.Buffer
			tw := tabwriter.NewWriter(&want, 0, 4, pad, ' ', 0)
			fmt.Fprint(tw, in)
			tw.Flush()
			tb := newTable(&got, pad)
			fmt.Fprint(tb, in)
			if err := tb.Flush(); err != nil {
				t.Fatal(err)
			}
			if got.String() != want.String() {
				t.Fatalf("padding %d, input %q:\ngot  %q\nwant %q", pad, in, got.String(), want.String())
			}
		}
	}
}
