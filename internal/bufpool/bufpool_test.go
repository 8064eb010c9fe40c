package bufpool

import "testing"

func TestPool(t *testing.T) {
	p := New(2, 100)
	a, b, c := p.Get(), p.Get(), p.Get()
	for _, x := range []*[]byte{a, b, c} {
		if len(*x) != 100 {
			t.Fatalf("buffer of %d bytes", len(*x))
		}
	}
	*a = (*a)[:10] // a caller shortened it
	p.Put(a)
	p.Put(b)
	p.Put(c) // beyond the bound: dropped
	if got := p.Get(); got != a || len(*got) != 100 {
		t.Fatalf("Get returned %p (len %d), want the first buffer put, restored to full length", got, len(*got))
	}
	if got := p.Get(); got != b {
		t.Fatal("second buffer not reused")
	}
	if got := p.Get(); got == c {
		t.Fatal("a buffer beyond the bound was kept")
	}
}

func TestGetPutAllocs(t *testing.T) {
	p := New(4, 1280)
	p.Put(p.Get())
	if n := testing.AllocsPerRun(100, func() { p.Put(p.Get()) }); n != 0 {
		t.Fatalf("%v allocations per Get/Put with a buffer idle", n)
	}
}
