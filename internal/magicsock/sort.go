package magicsock

// insertionSort sorts s stably by less. The lists sorted here are short
// (a peer's endpoints, a netcheck's regions and probes), and each type
// given to slices.SortFunc would link a pattern-defeating quicksort of its
// own: about 10 KB of the binary for netip.AddrPort, 5 KB for int.
func insertionSort[T any](s []T, less func(a, b T) bool) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && less(s[j], s[j-1]); j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}
