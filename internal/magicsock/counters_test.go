package magicsock

import (
	"testing"
	"time"
)

func TestCounters(t *testing.T) {
	a, b, _ := pair(t)
	bKey := b.key.NodePublic()
	n := uint64(len(wgMsg))

	// Before discovery the message goes through DERP only: a has no
	// candidate for b yet.
	if err := a.Send(bKey, []byte(wgMsg)); err != nil {
		t.Fatal(err)
	}
	recv(t, b)
	ac, bc := a.Counters(), b.Counters()
	if ac.DERPPacketsOut != 1 || ac.DERPBytesOut != n || ac.DirectPacketsOut != 0 {
		t.Fatalf("sender after one relayed message: %+v", ac)
	}
	if bc.DERPPacketsIn != 1 || bc.DERPBytesIn != n || bc.DirectPacketsIn != 0 {
		t.Fatalf("receiver after one relayed message: %+v", bc)
	}

	waitDirect(t, a, b)
	for len(b.wg) > 0 {
		<-b.wg
	}
	a0, b0 := a.Counters(), b.Counters()
	for range 10 {
		if err := a.Send(bKey, []byte(wgMsg)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 2*time.Second, "ten direct messages to arrive", func() bool {
		return b.Counters().DirectPacketsIn-b0.DirectPacketsIn >= 10
	})
	ac, bc = a.Counters(), b.Counters()
	if d := ac.DirectPacketsOut - a0.DirectPacketsOut; d != 10 || ac.DirectBytesOut-a0.DirectBytesOut != 10*n {
		t.Fatalf("sender counted %d direct messages of 10: %+v", d, ac)
	}
	if ac.DERPPacketsOut != a0.DERPPacketsOut {
		t.Fatalf("relayed while the direct path was trusted: %+v, before %+v", ac, a0)
	}
	if bc.DirectBytesIn-b0.DirectBytesIn < 10*n {
		t.Fatalf("receiver: %+v, before %+v", bc, b0)
	}
	// Disco pings and pongs are not WireGuard messages: with no more
	// data, the counters stay as they are while heartbeats go on.
	time.Sleep(3 * fastTiming.heartbeat)
	if ac2 := a.Counters(); ac2 != ac {
		t.Fatalf("counters moved without data: %+v, then %+v", ac, ac2)
	}
}
