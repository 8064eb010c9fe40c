package magicsock

import (
	"math/rand"
	"slices"
	"testing"
)

// TestInsertionSort: the result is sorted and stable, as
// slices.SortStableFunc's.
func TestInsertionSort(t *testing.T) {
	type item struct{ key, seq int }
	r := rand.New(rand.NewSource(1))
	for n := 0; n < 60; n++ {
		s := make([]item, n)
		for i := range s {
			s[i] = item{r.Intn(5), i}
		}
		want := slices.Clone(s)
		slices.SortStableFunc(want, func(a, b item) int { return a.key - b.key })
		insertionSort(s, func(a, b item) bool { return a.key < b.key })
		if !slices.Equal(s, want) {
			t.Fatalf("n=%d: %v, want %v", n, s, want)
		}
	}
}
