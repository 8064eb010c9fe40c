package nodetest

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/microlink-go/microlink/interop/lab"
)

// TestFirstDatagrams: datagrams sent right after both nodes start, with no
// ping first to open a path, arrive within a few seconds.
func TestFirstDatagrams(t *testing.T) {
	l := lab.Start(t, lab.Options{})
	for i := 0; i < 3; i++ {
		a := startNode(t, l, fmt.Sprintf("ml-a%d", i), "")
		b := startNode(t, l, fmt.Sprintf("ml-b%d", i), "")
		rc, err := b.ListenUDP(7777)
		if err != nil {
			t.Fatal(err)
		}
		sc, err := a.ListenUDP(0)
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "b in a's netmap", func() bool { _, ok := findPeer(a, fmt.Sprintf("ml-b%d", i)); return ok })
		start := time.Now()
		got := make(chan time.Duration, 1)
		go func() {
			buf := make([]byte, 100)
			rc.SetReadDeadline(time.Now().Add(20 * time.Second))
			if _, _, err := rc.ReadFromUDPAddrPort(buf); err == nil {
				got <- time.Since(start)
			}
			close(got)
		}()
		dst := netip.AddrPortFrom(b.IPv4(), 7777)
		var took time.Duration
	send:
		for {
			sc.WriteToUDPAddrPort([]byte("hello"), dst)
			select {
			case d, ok := <-got:
				if !ok {
					t.Fatalf("round %d: nothing arrived in 20 s", i)
				}
				took = d
				break send
			case <-time.After(100 * time.Millisecond):
			}
		}
		t.Logf("round %d: first datagram after %v", i, took)
		if took > time.Second {
			t.Errorf("round %d: first datagram took %v", i, took)
		}
		a.Close()
		b.Close()
		rc.Close()
	}
}
