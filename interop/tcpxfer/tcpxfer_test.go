package tcpxfer

import (
	"net"
	"testing"
)

func TestPushGet(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go Serve(l)
	for _, size := range []int64{0, 1, blockSize - 1, 3*blockSize + 7, 5 << 20} {
		for name, f := range map[string]func(net.Conn, int64) error{"push": Push, "get": Get} {
			c, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			if err := f(c, size); err != nil {
				t.Errorf("%s %d: %v", name, size, err)
			}
			c.Close()
		}
	}
}

func TestHold(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go Serve(l)
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := Hold(c); err != nil {
		t.Fatal(err)
	}
}

func TestCheckFindsCorruption(t *testing.T) {
	b := make([]byte, 3*blockSize)
	fill(b, 12345)
	if !check(b, 12345) {
		t.Fatal("the stream does not check")
	}
	if check(b, 12345+blockSize) {
		t.Fatal("a block in the wrong place checks")
	}
	b[70000] ^= 1
	if check(b, 12345) {
		t.Fatal("a flipped bit checks")
	}
}
